"""Gallery search: embed a folder of person crops once, then query it with other crops.

    python -m tfreid.search index --model RUN_DIR|EXPORT --images DIR|LIST --out crops.index
    python -m tfreid.search query --index crops.index --images q1.jpg q2.jpg --topk 10 --out res/

The same as a Python API:

    >>> from tfreid.search import GalleryIndex, build_index           # doctest: +SKIP
    >>> build_index("saved_models/hacnn/1", "crops/", "crops.index")  # doctest: +SKIP
    >>> result = GalleryIndex.load("crops.index").query(["q1.jpg"], k=10)  # doctest: +SKIP
    >>> print(result.format()); result.write("res/")                 # doctest: +SKIP

Exact search runs in NumPy in bounded memory (`tfreid.search.exact`); with the `search` extra
(faiss-cpu) a faiss flat index gives the same results and an IVF-Flat index approximate ones
(`tfreid.search.faiss_index`). Importing this package does not import TensorFlow.
"""

from tfreid.search.exact import exact_topk
from tfreid.search.index import GalleryIndex, build_index
from tfreid.search.results import SearchResult

__all__ = ["GalleryIndex", "SearchResult", "build_index", "exact_topk"]
