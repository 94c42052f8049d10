"""Captioner backends. No captioning weights can be had offline, so CoCa, BLIP and BLIP-2 are
the real architectures at tiny configs with random weights: these tests exercise the code
paths (preprocess, batched generate with sampling, K captions per image, decoding, seeding),
never caption quality. ``labels`` runs the real default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pairsift.errors import ConfigError
from pairsift.models.captioners import (
    CocaCaptioner,
    Decoding,
    HfCaptioner,
    check_name,
    labels_caption,
    nucleus_sample,
)

IMAGES = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")]
SAMPLING = Decoding(n=2, temperature=0.75, top_p=0.9, max_tokens=8, seed=3)


def _captions(captioner, decoding=SAMPLING):
    pixels = [captioner.preprocess(im) for im in IMAGES]
    return captioner.caption(pixels, decoding, [None] * len(pixels), [3, 4])


def _check_k_per_image_and_seeded(captioner):
    first = _captions(captioner)
    assert len(first) == 2 and all(len(c) == 2 for c in first)
    assert all(isinstance(t, str) for c in first for t in c)
    assert _captions(captioner) == first  # same seed, same captions
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    _captions(captioner)
    assert torch.equal(torch.rand(1), before)  # the process's generator is left untouched


def test_names_are_checked_before_loading():
    for name in ("labels", "open_clip:coca_ViT-L-14/mscoco_finetuned_laion2b_s13b_b90k",
                 "hf:Salesforce/blip2-opt-2.7b"):
        check_name(name)
    for name in ("blip", "open_clip:coca_ViT-L-14", "hf:"):
        with pytest.raises(ConfigError, match="accepted forms"):
            check_name(name)


def test_labels_caption_quotes_the_spotted_text():
    assert labels_caption("tabby cat", None) == "a photo of a tabby cat"
    assert labels_caption("tabby cat", ["SALE", " ", "50%"]) == \
        "a photo of a tabby cat; the text reads 'SALE 50%'"


@pytest.mark.parametrize(("name", "said"), [
    ("espresso", "an espresso"), ("Egyptian Mau", "an Egyptian Mau"), ("ox", "an ox"),
    ("hourglass", "an hourglass"), ("umbrella", "an umbrella"), ("unicycle", "a unicycle"),
    ("European polecat", "a European polecat"), ("one-piece bathing suit",
                                                 "a one-piece bathing suit"),
    ("a cat having a striped coat", "a cat having a striped coat"), ("hen", "a hen")])
def test_labels_caption_says_the_right_article(name, said):
    assert labels_caption(name, None) == f"a photo of {said}"


def test_labels_captions_depend_on_each_image_seed_not_on_the_batching():
    from pairsift.models.captioners import load_captioner
    from pairsift.synth.photos import PHOTOS, photo_pixels

    captioner = load_captioner("labels")
    pixels = [captioner.preprocess(photo_pixels(p)) for p in PHOTOS[:4]]
    decoding, seeds = Decoding(n=3, temperature=1.5, top_p=1.0), [11, 12, 13, 14]
    together = captioner.caption(pixels, decoding, [None] * 4, seeds)
    one_by_one = [captioner.caption([p], decoding, [None], [s])[0]
                  for p, s in zip(pixels, seeds, strict=True)]
    assert together == one_by_one
    reseeded = captioner.caption(pixels, decoding, [None] * 4, [21, 22, 23, 24])
    assert reseeded != together  # the seeds do drive the sampling


def test_nucleus_sample_greedy_and_narrow_nucleus_take_the_top_class():
    probs = np.array([0.1, 0.6, 0.3])
    rng = np.random.default_rng(0)
    assert nucleus_sample(probs, Decoding(temperature=0), rng) == 1
    assert {nucleus_sample(probs, Decoding(top_p=0.5), rng) for _ in range(20)} == {1}
    drawn = {nucleus_sample(probs, Decoding(temperature=1.0, top_p=1.0), rng)
             for _ in range(200)}
    assert drawn == {0, 1, 2}


def test_coca_random_weights_generates_k_captions_per_image():
    from open_clip import image_transform
    from open_clip.coca_model import CoCa, MultimodalCfg
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CoCa(
        embed_dim=32,
        multimodal_cfg=MultimodalCfg(context_length=76, width=32, heads=2, layers=1,
                                     attn_pooler_heads=2),
        text_cfg=CLIPTextCfg(context_length=76, vocab_size=49408, width=32, heads=2, layers=1,
                             embed_cls=True, output_tokens=True),
        vision_cfg=CLIPVisionCfg(image_size=32, layers=1, width=32, head_width=16,
                                 patch_size=16, attentional_pool=True, attn_pooler_heads=2,
                                 output_tokens=True))
    captioner = CocaCaptioner("open_clip:coca-tiny/random", model,
                              image_transform(32, is_train=False))
    _check_k_per_image_and_seeded(captioner)
    with pytest.raises(ConfigError, match="temperature above 0"):
        _captions(captioner, Decoding(n=1, temperature=0))


def _bert_tokenizer(tmp_path, size):
    from transformers import BertTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(special + [f"w{i}" for i in range(size - len(special))]))
    return BertTokenizerFast(vocab_file=str(vocab))


def test_blip_random_weights_generates_k_captions_per_image(tmp_path):
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(0)
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=16),
        text_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32,
                         bos_token_id=2, sep_token_id=3, pad_token_id=0))
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}),
                              _bert_tokenizer(tmp_path, 300))
    _check_k_per_image_and_seeded(HfCaptioner("hf:blip-tiny", BlipForConditionalGeneration(
        config), processor))


def test_blip2_random_weights_generates_k_captions_per_image(tmp_path):
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    torch.manual_seed(0)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=16),
        qformer_config=dict(vocab_size=300, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=1, num_attention_heads=2, encoder_hidden_size=32),
        text_config=dict(model_type="opt", vocab_size=300, hidden_size=32, ffn_dim=64,
                         num_hidden_layers=1, num_attention_heads=2, word_embed_proj_dim=32,
                         max_position_embeddings=64, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        num_query_tokens=4, image_token_index=299)
    processor = Blip2Processor(BlipImageProcessor(size={"height": 32, "width": 32}),
                               _bert_tokenizer(tmp_path, 299), num_query_tokens=4)
    _check_k_per_image_and_seeded(HfCaptioner("hf:blip2-tiny", Blip2ForConditionalGeneration(
        config), processor))
