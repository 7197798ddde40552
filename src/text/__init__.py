from src.text.encoders import (
    BagOfNgrams,
    PrecomputedEmbeddings,
    SentenceTransformerEncoder,
    TextEncoder,
    encode_captions,
)

__all__ = [
    "BagOfNgrams",
    "PrecomputedEmbeddings",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "encode_captions",
]
