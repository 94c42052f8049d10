"""Sources on object storage: ingest from a local S3-compatible server (moto's, started here)
gives the workspace that ingest from the same files on disk gives."""

from __future__ import annotations

import socket
from pathlib import Path

import pyarrow as pa
import pytest

from pairsift import ingest
from pairsift.errors import SourceError
from pairsift.io.sources import ImageBytesReader
from pairsift.synth import SynthConfig, make_corpus
from pairsift.workspace import Workspace

BUCKET = "corpora"
# what a sample is, wherever its file lives (the shard column holds the path or the URL)
SAME = ["uid", "key", "source", "caption", "caption_issue", "container", "offset", "length",
        "width", "height", "sha256"]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free port of 127.0.0.1, found through the usual AWS variables."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1",
                            "AWS_ENDPOINT_URL": endpoint}.items():
            env.setenv(name, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


def upload(folder: Path, prefix: str) -> str:
    """Every file directly in ``folder`` as s3://BUCKET/prefix/NAME; returns the prefix URL."""
    import boto3

    client = boto3.client("s3")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return f"s3://{BUCKET}/{prefix}"


def assert_same_workspace(local: Path, remote: Path) -> None:
    a, b = Workspace.open(local), Workspace.open(remote)
    assert a.part_ids() == b.part_ids() and a.num_samples() == b.num_samples() > 0
    for part in a.part_ids():
        assert a.read_part(part, SAME).equals(b.read_part(part, SAME))
    columns = ["uid", "key", "stage", "reason"]
    assert a.errors().select(columns).equals(b.errors().select(columns))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """WebDataset shards with failed downloads (img2dataset status files) and corrupt images."""
    root = tmp_path_factory.mktemp("s3") / "shards"
    make_corpus(root, SynthConfig(shard_size=16), layout="webdataset")
    return root


def test_webdataset_shards_on_s3_ingest_as_the_local_files_do(s3_endpoint, shards, tmp_path):
    url = upload(shards, "shards")
    ingest(shards, tmp_path / "local", progress=False)
    ingest(url, tmp_path / "s3", progress=False)
    assert_same_workspace(tmp_path / "local", tmp_path / "s3")
    ws = Workspace.open(tmp_path / "s3")
    assert ws.sources()["shards"]["paths"][0].startswith(f"s3://{BUCKET}/shards/")
    assert ws.errors().filter(pa.compute.equal(ws.errors().column("reason"),
                                               "download_failed")).num_rows > 0


def test_a_brace_pattern_of_s3_shards_names_the_same_units(s3_endpoint, shards, tmp_path):
    url = upload(shards, "pattern")
    tars = sorted(p.name for p in shards.glob("*.tar"))
    assert len(tars) > 1
    ingest(f"{url}/{{{tars[0][:-4]}..{tars[-1][:-4]}}}.tar", tmp_path / "s3", name="shards",
           progress=False)
    ingest(shards, tmp_path / "local", progress=False)
    assert_same_workspace(tmp_path / "local", tmp_path / "s3")


def test_parquet_on_s3_ingests_as_the_local_file_does_and_reads_back(s3_endpoint, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", SynthConfig(), layout="parquet")
    url = upload(corpus.root, "parquet")
    ingest(corpus.source, tmp_path / "local", progress=False)
    ingest(f"{url}/samples.parquet", tmp_path / "s3", progress=False)
    assert_same_workspace(tmp_path / "local", tmp_path / "s3")
    ws = Workspace.open(tmp_path / "s3")  # later stages read the image bytes from S3 too
    rows = ws.read_part(ws.part_ids()[0], ["source", "shard", "container", "offset", "length"])
    with ImageBytesReader(ws.image_columns()) as reader:
        remote = [reader.read(r) for r in rows.to_pylist()[:3]]
    local = Workspace.open(tmp_path / "local")
    rows = local.read_part(local.part_ids()[0], ["source", "shard", "container", "offset",
                                                 "length"])
    with ImageBytesReader(local.image_columns()) as reader:
        assert remote == [reader.read(r) for r in rows.to_pylist()[:3]]


def test_a_missing_s3_source_is_named(s3_endpoint, tmp_path):
    with pytest.raises(SourceError, match="no .tar or .parquet object"):
        ingest(f"s3://{BUCKET}/nothing-here", tmp_path / "ws", progress=False)
