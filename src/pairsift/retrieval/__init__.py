"""Vector search over a workspace: faiss index choice and build (``build``), search and nprobe
tuning (``search``), hits with captions and verdicts (``searcher``), calibrated match confidence
(``calibration``) and kNN labels (``knn``). Submodules are imported on use: ``searcher`` loads
torch, which the index build and the benchmarks do not need."""
