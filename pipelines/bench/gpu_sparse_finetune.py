"""Full fine-tuning (``train_encoder: true``) of the inference-free sparse retriever on a GPU machine; vectors back.

Runs where only torch / transformers / sentence-transformers / numpy / yaml exist (no Lucene, no datasets): reads
``.gpu_payload/`` (:mod:`pipelines.bench.gpu_sparse_payload`), trains variants (a), (b), (c) of
``pipelines/configs/sparse_scifact_{a,b,c}.yaml`` with the whole transformer trainable
(:class:`retrieval.trainer.SparseTrainer` on prepared inputs), encodes the SciFact and Cranfield corpora with each
trained model (:func:`retrieval.encoder.encode_documents`, float32, 256 wordpieces, full vocabulary), quantizes them
(``round_half_up(100·w)``, :func:`retrieval.impact.quantize_weights`) and writes, under ``--out``:

* ``vectors_<variant>.npz``: both corpora, :mod:`retrieval.sparse_vectors` CSR format (one file per corpus,
  ``vectors_<variant>_<corpus>.npz``, if the pair would exceed 15 MiB);
* ``summary.json``: environment, arguments, calibration, per variant the resolved config, steps, training and
  encoding wall times, encoding stats and the per-step training log (rewritten after every phase, so a run cut
  short still returns what it finished).

The number of steps is set from the time budget: a short calibration run of variant (c) measures seconds per step
on this machine, then every variant trains ``min(max_steps, train_seconds / step_time)`` steps (the same for all);
learning-rate warm-up and the quadratic λ warm-up both take 10 % of the steps (authors: 200 of 2000).
The trained weights stay on the GPU machine. Evaluation happens on the CPU machine
(:mod:`pipelines.bench.gpu_sparse_eval`). Exact commands: ``docs/sparse_retrieval_gpu.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"a": "sparse_scifact_a.yaml", "b": "sparse_scifact_b.yaml", "c": "sparse_scifact_c.yaml"}
MAX_FILE_BYTES = 15 * 2**20  # the device tool returns files of at most 16 MiB ...
MAX_FILES = 8  # ... and at most 8 of them


def _gunzip(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def unpack_payload(payload: Path, work: Path) -> dict[str, Path]:
    """Decompress the payload into ``work``; the backbone gets a float32 ``model.safetensors``."""
    import torch
    from safetensors.torch import load_file, save_file

    if not (payload / "manifest.json").is_file():
        raise FileNotFoundError(f"{payload}: no manifest.json; build it with `python -m pipelines.bench."
                                "gpu_sparse_payload`.")
    backbone = work / "backbone"
    backbone.mkdir(parents=True, exist_ok=True)
    for path in (payload / "backbone").iterdir():
        if path.name != "model.fp16.safetensors":
            shutil.copyfile(path, backbone / path.name)
    tensors = {k: (v.to(torch.float32) if v.is_floating_point() else v)
               for k, v in load_file(str(payload / "backbone" / "model.fp16.safetensors")).items()}
    save_file(tensors, str(backbone / "model.safetensors"), metadata={"format": "pt"})
    scifact = work / "scifact"
    for name in ("corpus.jsonl", "queries.jsonl"):
        _gunzip(payload / "scifact" / f"{name}.gz", scifact / name)
    (scifact / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(payload / "scifact" / "qrels" / "train.tsv", scifact / "qrels" / "train.tsv")
    return {
        "backbone": backbone, "scifact": scifact,
        "cranfield_corpus": _gunzip(payload / "cranfield" / "corpus.jsonl.gz", work / "cranfield" / "corpus.jsonl"),
        "candidates": _gunzip(payload / "scifact-train-candidates.json.gz", work / "candidates.json"),
        "idf": payload / "scifact_idf.npy",
    }


def variant_config(variant: str, args: argparse.Namespace, steps: int, backbone: Path, lr: float,
                   overrides: dict[str, Any] | None = None) -> Any:
    """The committed config of ``variant`` with full fine-tuning, this script's sizes, then ``overrides``."""
    from pipelines.config_files import read_config_files
    from pipelines.run_config import load_sparse_train_config

    raw = read_config_files(ROOT / "pipelines" / "configs" / CONFIGS[variant])[0]
    model = {**raw.get("model", {}), "backbone": str(backbone)}
    warm = max(1, steps // 10)
    overrides = dict(overrides or {})
    flops = {"warmup_steps": warm} | ({"weight": overrides.pop("flops_weight")} if "flops_weight" in overrides else {})
    hooks = [{**hook, **flops} if hook["name"] == "idf_aware_flops" else hook for hook in raw["hooks"]]
    sizes = {"batch_queries": args.batch_queries, "docs_per_query": args.docs_per_query,
             "train_max_length": args.train_max_length}
    return load_sparse_train_config(
        ROOT / "pipelines" / "configs" / CONFIGS[variant], data="payload", out_dir=str(args.out), model=model,
        train_encoder=True, steps=steps, lr=lr, warmup_steps=warm, hooks=hooks,
        compute_dtype="bfloat16", device=args.device, seed=args.seed,
        projection=None if getattr(args, "projection", "auto") == "auto" else args.projection,
        **(sizes | overrides),
    )


OVERRIDABLE = {"ranking_loss": str, "temperature": float, "score_scale": float, "docs_per_query": int,
               "flops_weight": float, "lr": float}


def parse_extra(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``label:variant:key=value,key=value`` → (label, variant, overrides); keys from ``OVERRIDABLE``."""
    parts = spec.split(":")
    if len(parts) != 3 or not parts[0] or parts[1] not in CONFIGS:
        raise argparse.ArgumentTypeError(f"--extra must be LABEL:VARIANT:KEY=VALUE[,KEY=VALUE] with VARIANT in "
                                         f"{sorted(CONFIGS)}, got {spec!r}")
    overrides: dict[str, Any] = {}
    for item in filter(None, parts[2].split(",")):
        key, _, value = item.partition("=")
        if key not in OVERRIDABLE or not value:
            raise argparse.ArgumentTypeError(f"--extra {spec!r}: override {item!r} must be KEY=VALUE with KEY in "
                                             f"{sorted(OVERRIDABLE)}")
        overrides[key] = OVERRIDABLE[key](value)
    return parts[0], parts[1], overrides


class Inputs:
    """Training data and corpora read from the unpacked payload."""

    def __init__(self, paths: dict[str, Path], limit_docs: int | None) -> None:
        import torch

        from pipelines.retrieval_run import training_pairs
        from retrieval.beir import read_corpus, read_qrels, read_queries
        from retrieval.mining import Candidates

        self.corpus = read_corpus(paths["scifact"] / "corpus.jsonl")
        queries, _ = read_queries(paths["scifact"] / "queries.jsonl")
        self.queries, self.positives = training_pairs(queries, read_qrels(paths["scifact"] / "qrels" / "train.tsv"))
        self.candidates = Candidates.load(paths["candidates"])
        self.idf = torch.from_numpy(np.load(paths["idf"], allow_pickle=False))
        cranfield = read_corpus(paths["cranfield_corpus"])
        self.encode = {
            "scifact": {d: doc.contents for d, doc in list(self.corpus.items())[:limit_docs]},
            "cranfield": {d: doc.contents for d, doc in list(cranfield.items())[:limit_docs]},
        }


def _build_model(config: Any, idf: Any) -> Any:
    from retrieval.encoder import build_sparse_encoder

    return build_sparse_encoder(config.encoder_config, idf=idf)


def encode_corpora(model: Any, inputs: Inputs, batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantized, packed vectors of each corpus and the encoding stats (+ seconds)."""
    import torch

    from retrieval.encoder import encode_documents, mlm_parts
    from retrieval.impact import MAX_DOC_IMPACT, ImpactQuantization, quantize_weights
    from retrieval.sparse_vectors import pack_quantized

    scale = ImpactQuantization().doc_scale
    tokenizer = mlm_parts(model)[0].tokenizer
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    packed, stats = {}, {}
    for name, texts in inputs.encode.items():
        started = time.perf_counter()
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 encoding, as on the CPU machine
        vectors, encoding = encode_documents(model, texts, batch_size=batch_size, show_progress=False)
        encode_s = time.perf_counter() - started
        quantized = {d: quantize_weights(v, scale, where=f"{name} document {d!r}", limit=MAX_DOC_IMPACT)
                     for d, v in vectors.items()}
        packed[name] = pack_quantized(quantized, vocabulary, doc_scale=scale)
        stats[name] = {**encoding.as_dict(), "encode_seconds": encode_s,
                       "seconds_with_quantization": time.perf_counter() - started,
                       "avg_active_terms_quantized": float(packed[name].active_terms.mean())}
        logger.info("%s: %d documents encoded in %.1f s, %.1f active terms/doc after quantization", name,
                    len(texts), encode_s, stats[name]["avg_active_terms_quantized"])
    return packed, stats


def save_vectors(out: Path, label: str, packed: dict[str, Any]) -> list[str]:
    """``vectors_<label>.npz`` with every corpus, or one file per corpus when that is over ``MAX_FILE_BYTES``."""
    from retrieval.sparse_vectors import save_packed

    path = save_packed(out / f"vectors_{label}.npz", packed)
    if path.stat().st_size <= MAX_FILE_BYTES:
        return [path.name]
    path.unlink()
    names = [save_packed(out / f"vectors_{label}_{name}.npz", {name: p}).name for name, p in packed.items()]
    for name in names:
        size = (out / name).stat().st_size
        if size > MAX_FILE_BYTES:
            logger.error("%s is %.1f MiB: over the %d MiB the device tool returns", name, size / 2**20,
                         MAX_FILE_BYTES // 2**20)
    return names


def _environment(device: str) -> dict[str, Any]:
    import sentence_transformers
    import torch
    import transformers

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__,
           "numpy": np.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({"gpu": props.name, "gpu_memory_GiB": props.total_memory / 2**30,
                    "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda})
    return env


def _steps_per_second(log: list[dict[str, float]], skip: int) -> float:
    times = [e["elapsed_s"] for e in log]
    return (len(times) - 1 - skip) / (times[-1] - times[skip])


def _train(config: Any, model: Any, inputs: Inputs) -> list[dict[str, float]]:
    """Full fine-tuning on the payload's prepared inputs (no Lucene): the per-step log."""
    from retrieval.trainer import SparseTrainer, TrainingData

    data = TrainingData(inputs.queries, inputs.positives, inputs.candidates, inputs.corpus)
    return SparseTrainer(config, model, data, show_progress=False).fit()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from common_regs.io import atomic_write_text

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"environment": _environment(args.device), "arguments": vars(args) | {"out": str(out)},
                               "variants": {}}

    def write() -> None:
        summary["elapsed_s"] = time.perf_counter() - started
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")

    write()
    work = Path(tempfile.mkdtemp(prefix="gpu_sparse_"))
    paths = unpack_payload(Path(args.payload), work)
    inputs = Inputs(paths, args.limit_docs)
    summary["data"] = {"train_queries": len(inputs.queries), "corpus_docs": len(inputs.corpus),
                       "encoded": {k: len(v) for k, v in inputs.encode.items()}}
    summary["setup_s"] = time.perf_counter() - started
    torch.backends.cuda.matmul.allow_tf32 = True
    calibration = variant_config("c", args, args.calibration_steps, paths["backbone"], args.lr)
    probe = _build_model(calibration, inputs.idf)
    try:
        log = _train(calibration, probe, inputs)
    except RuntimeError as error:  # e.g. out of memory in the dense projection: fall back to the loop, say so
        if args.projection == "loop":
            raise
        logger.error("calibration failed with projection %r (%s); falling back to the loop", args.projection, error)
        summary["projection_fallback"] = str(error)
        args.projection = "loop"
        del probe
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        calibration = variant_config("c", args, args.calibration_steps, paths["backbone"], args.lr)
        probe = _build_model(calibration, inputs.idf)
        log = _train(calibration, probe, inputs)
    rate = _steps_per_second(log, skip=min(3, len(log) - 2))
    steps = int(max(args.min_steps, min(args.max_steps, rate * args.train_seconds)))
    del probe
    summary["calibration"] = {"steps": len(log), "steps_per_s": rate, "chosen_steps": steps,
                              "projection": calibration.projection or "auto",
                              "loss": [e["loss"] for e in log]}
    logger.info("calibration: %.2f steps/s -> %d steps per variant", rate, steps)
    write()
    plan: list[tuple[str, str, float, dict[str, Any]]] = [(v, v, args.lr, {}) for v in args.variants]
    if args.extra_lr:
        plan.append((f"{args.extra_variant}-lr{args.extra_lr:g}", args.extra_variant, args.extra_lr, {}))
    plan += [(label, variant, overrides.pop("lr", args.lr), overrides) for label, variant, overrides in args.extra]
    last_cost = None
    for label, variant, lr, overrides in plan:
        elapsed = time.perf_counter() - started
        projected = last_cost if last_cost is not None else args.train_seconds + 30
        files = len([p for p in out.iterdir() if p.is_file()])
        if files + 2 > MAX_FILES:
            logger.warning("skipping %s: %d files already under %s (the tool returns %d)", label, files, out,
                           MAX_FILES)
            summary["variants"][label] = {"skipped": f"{files} output files already"}
            write()
            continue
        if elapsed + projected > args.deadline_s:
            logger.warning("skipping %s: %.0f s elapsed + %.0f s projected > deadline %.0f s", label, elapsed,
                           projected, args.deadline_s)
            summary["variants"][label] = {"skipped": f"deadline ({elapsed:.0f} s + {projected:.0f} s)"}
            write()
            continue
        phase = time.perf_counter()
        torch.backends.cuda.matmul.allow_tf32 = True
        config = variant_config(variant, args, steps, paths["backbone"], lr, overrides)
        model = _build_model(config, inputs.idf)
        train_start = time.perf_counter()
        log = _train(config, model, inputs)
        if config.device and config.device.startswith("cuda"):
            torch.cuda.synchronize()
        train_s = time.perf_counter() - train_start
        entry = {"config": asdict(config), "overrides": overrides, "steps": len(log), "train_seconds": train_s,
                 "peak_gpu_memory_GiB": (torch.cuda.max_memory_allocated() / 2**30
                                         if torch.cuda.is_available() else None),
                 "final": log[-1], "log": log}
        summary["variants"][label] = entry
        write()
        packed, stats = encode_corpora(model, inputs, args.encode_batch)
        entry["encoding"] = stats
        entry["files"] = save_vectors(out, label, packed)
        last_cost = time.perf_counter() - phase
        entry["phase_seconds"] = last_cost
        logger.info("%s: %d steps in %.1f s (final loss %.4f, %.1f active terms/doc in training); phase %.0f s",
                    label, len(log), train_s, log[-1]["loss"], log[-1].get("reg/idf_aware_flops/nnz", float("nan")),
                    last_cost)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write()
    shutil.rmtree(work, ignore_errors=True)
    write()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.gpu_sparse_finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payload", type=Path, default=ROOT / ".gpu_payload")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="*", choices=sorted(CONFIGS), default=["a", "b", "c"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--projection", choices=["auto", "loop", "dense"], default="auto",
                        help="max-pooled vocabulary projection in training: auto = dense on CUDA, loop elsewhere")
    parser.add_argument("--lr", type=float, default=2e-5, help="AdamW lr (authors' configs: 2e-5)")
    parser.add_argument("--extra-variant", choices=sorted(CONFIGS), default="c")
    parser.add_argument("--extra-lr", type=float, default=None,
                        help="also train --extra-variant at this lr, if the deadline allows")
    parser.add_argument("--extra", type=parse_extra, action="append", default=[],
                        help="LABEL:VARIANT:KEY=VALUE[,...]: also train VARIANT with these config overrides (keys: "
                        + ", ".join(sorted(OVERRIDABLE)) + "), in order, if the deadline allows")
    parser.add_argument("--train-seconds", type=float, default=75.0, help="training budget per variant")
    parser.add_argument("--max-steps", type=int, default=2000, help="authors' configs: 2000")
    parser.add_argument("--min-steps", type=int, default=1)
    parser.add_argument("--calibration-steps", type=int, default=12)
    parser.add_argument("--deadline-s", type=float, default=400.0, help="skip a variant projected to end later")
    parser.add_argument("--batch-queries", type=int, default=16)
    parser.add_argument("--docs-per-query", type=int, default=4)
    parser.add_argument("--train-max-length", type=int, default=256)
    parser.add_argument("--encode-batch", type=int, default=64)
    parser.add_argument("--limit-docs", type=int, default=None, help="encode only the first N documents (dry run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stdout)
    summary = run(args)
    for label, entry in summary["variants"].items():
        terms = {c: round(s["avg_active_terms_quantized"], 1) for c, s in entry.get("encoding", {}).items()}
        print(f"variant {label}: steps {entry.get('steps')}, train s {entry.get('train_seconds')}, "
              f"final loss {entry.get('final', {}).get('loss')}, active terms/doc {terms}, {entry.get('skipped', '')}")
    print(f"total {summary['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
