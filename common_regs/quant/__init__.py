"""Quantization-related regularizers: elastic bit-width supernets, quantization noise, quantized latents."""

from __future__ import annotations

from common_regs.quant.elastic_quantization import ElasticQuantization
from common_regs.quant.latent_quantization import LatentQuantization
from common_regs.quant.quantization_noise import QuantizationNoise

__all__ = ["ElasticQuantization", "LatentQuantization", "QuantizationNoise"]
