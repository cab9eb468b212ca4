"""A head-only trained sparse encoder (decoder untied from the input embeddings) reloads with its trained bias.

Regression: transformers skips every tie of ``_tied_weights_keys`` when ``tie_word_embeddings`` is False, so the
MLM decoder bias (saved once, as ``cls.predictions.bias``) came back as zeros and every vocabulary entry was active.
"""

from __future__ import annotations

import torch

from retrieval.encoder import (
    SparseEncoderConfig,
    build_sparse_encoder,
    document_parts,
    encode_documents,
    load_sparse_encoder,
)
from retrieval.training_batches import untie_output_embeddings

CORPUS = {"d1": "the protein binds the receptor", "d2": "aspirin and the stroke risk"}


def test_untied_head_round_trip_keeps_decoder_bias(tmp_path) -> None:
    model = build_sparse_encoder(SparseEncoderConfig(max_seq_length=32), corpus_texts=CORPUS.values())
    untie_output_embeddings(model)
    with document_parts(model) as (_, _, weight, bias):
        with torch.no_grad():
            bias.add_(torch.linspace(-1.0, 1.0, bias.numel()))  # a "trained" bias, not the initial constant
            weight.mul_(1.5)
        expected_bias = bias.detach().clone()
    model.save_pretrained(str(tmp_path / "m"))
    loaded = load_sparse_encoder(tmp_path / "m")
    with document_parts(loaded) as (hf, _, weight, bias):
        torch.testing.assert_close(bias.detach(), expected_bias)
        assert weight.data_ptr() != hf.get_input_embeddings().weight.data_ptr()  # still untied
    a, _ = encode_documents(model, CORPUS)
    b, _ = encode_documents(loaded, CORPUS)
    assert a == b
