"""``emclassify bench``: how much faster the native path is, measured side by side in one run.

On one generated TIFF folder (synthetic liposomes, ~180x180 px with masks) it
times three pipelines, separately for preprocessing alone, model alone and end
to end:

1. naive — sequential decode with ``tifffile.imread``, the PyTorch/numpy
   reference preprocessing, the eager NCHW model (conv, batch-norm, ReLU, pool
   as separate layers);
2. tuned plain PyTorch — emclassify's threaded folder reader (with its fast
   baseline-TIFF path), the reference preprocessing, and the fastest of: channels-last with batch-norm folded into the
   convs, ``to_mkldnn`` (oneDNN), ``torch.compile`` with freezing (reported);
3. native — ``emclassify batch``'s own path: threaded decode, the fused
   ``emclassify::preprocess`` op and the fused ``emclassify::conv_trunk``.

It also measures the conv trunk's GFLOP/s against an FP32 GEMM ceiling (the
best of MKL ``torch.mm`` and oneDNN matmul at large square sizes) and the peak
resident memory of each end-to-end run. Throughputs are the best of
``repeats`` runs; every run of a pipeline sees the same inputs.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import gc
import os
import platform
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

with warnings.catch_warnings():  # its classes use the deprecated torch.jit.script_method
    warnings.simplefilter("ignore", DeprecationWarning)
    import torch.utils.mkldnn

from . import ops
from ._native import backend_description, native_available, native_cuda_built
from .assets import default_model_path
from .inference import Classifier, batched, classify_folder
from .io.datasets import list_images
from .io.images import read_image, read_mask
from .modelfile import TrainedModel, load_model
from .models import count_macs, create_model
from .models.lipnet import LipNet
from .preprocess import PreprocessConfig, preprocess_reference


@dataclass
class BenchConfig:
    """What to measure. ``folder`` None generates ``n_images`` particles into a temporary folder."""

    n_images: int = 5000
    input_size: int = 64
    batch_size: int = 256
    arch: Optional[str] = None  # None: the bundled model; else a registry CNN with random weights
    folder: Optional[Path] = None
    repeats: int = 3
    try_compile: bool = True
    seed: int = 0


# --------------------------------------------------------------------------- measuring


def best_time(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Fastest of ``repeats`` timed calls, after one untimed warm-up call unless ``warmup`` is False (seconds)."""
    if warmup:
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@contextlib.contextmanager
def native_disabled():
    """Run the plain PyTorch path: the same switch as ``EMCLASSIFY_NATIVE=0``."""
    old = os.environ.get("EMCLASSIFY_NATIVE")
    os.environ["EMCLASSIFY_NATIVE"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["EMCLASSIFY_NATIVE"]
        else:
            os.environ["EMCLASSIFY_NATIVE"] = old


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM); elsewhere the peak is since start
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process since the last reset, MB (None where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


def gemm_ceiling(repeats: int = 3) -> Dict[str, float]:
    """Measured FP32 GEMM GFLOP/s: MKL (``torch.mm``) and oneDNN (mkldnn linear), best over sizes and runs."""
    out = {"mkl": 0.0, "onednn": 0.0}
    repeats = max(repeats, 5)
    with torch.no_grad():
        for n in (1024, 2048, 3072):
            a, b = torch.randn(n, n), torch.randn(n, n)
            flop = 2.0 * n ** 3
            out["mkl"] = max(out["mkl"], flop / best_time(lambda: a @ b, repeats) / 1e9)
            if torch.backends.mkldnn.is_available():
                lin = nn.Linear(n, n, bias=False).eval()
                lin.weight.data.copy_(b.t())
                mk, am = torch.utils.mkldnn.to_mkldnn(lin), a.to_mkldnn()
                out["onednn"] = max(out["onednn"], flop / best_time(lambda: mk(am), repeats) / 1e9)
    out["ceiling"] = max(out.values())
    return out


# --------------------------------------------------------------------------- plain PyTorch variants


def folded_copy(model: LipNet) -> LipNet:
    """A copy whose conv blocks are conv(bias) + ReLU with batch-norm folded in (channels-last)."""
    m = copy.deepcopy(model).eval()
    for stage in m.trunk:
        for block in stage.blocks:
            weight, bias = block.folded()
            conv = nn.Conv2d(block.conv.in_channels, block.conv.out_channels, 3, padding=block.padding)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)
            block.conv, block.bn = conv, nn.Identity()
    # eval() again: the new modules start in training mode, and a block in training mode computes
    # batch statistics (ConvBlock.forward), which a folded block has none of
    return m.eval().to(memory_format=torch.channels_last)


class _ChannelsLast(nn.Module):
    """A folded model fed channels-last input; ``features`` runs the trunk only."""

    def __init__(self, folded: LipNet, trunk_only: bool = False):
        super().__init__()
        self.model, self.trunk_only = folded, trunk_only

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        return self.model.trunk(x) if self.trunk_only else self.model.head(self.model.trunk(x))

    def feature_maps(self, x):
        return self.model.trunk(x.contiguous(memory_format=torch.channels_last))


class _MkldnnTrunk(nn.Module):
    """The folded trunk as oneDNN layers on mkldnn tensors; the head stays dense."""

    def __init__(self, folded: LipNet):
        super().__init__()
        trunk = nn.Sequential(*[
            nn.Sequential(*[nn.Sequential(b.conv, nn.ReLU()) for b in stage.blocks], stage.pool)
            for stage in folded.trunk
        ])
        self.trunk = torch.utils.mkldnn.to_mkldnn(trunk)
        self.head = folded.head

    def feature_maps(self, x):
        return self.trunk(x.to_mkldnn()).to_dense()

    def forward(self, x):
        return self.head(self.feature_maps(x))


class _Compiled(nn.Module):
    """``torch.compile`` (inductor, weights frozen as constants) of the folded channels-last model and trunk."""

    def __init__(self, folded: LipNet):
        super().__init__()
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        # dynamic=False: the last, smaller batch gets its own static graph (the dynamic-shape
        # graph failed a stride assertion on channels-last input with torch 2.13).
        self.model = torch.compile(_ChannelsLast(folded), dynamic=False)
        self.trunk = torch.compile(_ChannelsLast(copy.deepcopy(folded), trunk_only=True), dynamic=False)

    def forward(self, x):
        return self.model(x)

    def feature_maps(self, x):
        return self.trunk(x)


def tuned_variants(model: LipNet, try_compile: bool) -> Dict[str, Optional[nn.Module]]:
    """Plain-PyTorch inference variants to race (each with ``forward`` and ``features``)."""
    folded = folded_copy(model)
    variants: Dict[str, Optional[nn.Module]] = {"channels-last + folded BN": _ChannelsLast(folded)}
    if torch.backends.mkldnn.is_available():
        variants["to_mkldnn (oneDNN), folded BN"] = _MkldnnTrunk(folded)
    if try_compile:
        try:
            variants["torch.compile (inductor, freezing), folded BN"] = _Compiled(folded)
        except Exception as exc:  # noqa: BLE001 - no compiler, frozen bundle ...
            variants[f"torch.compile unavailable: {type(exc).__name__}"] = None
    return variants


# --------------------------------------------------------------------------- GPU


def gpu_measurements(model: LipNet, images, masks, cfg: PreprocessConfig, batch: int, repeats: int) -> Dict:
    """Batches of ``batch`` raw images on the GPU: cuDNN eager vs the fused native CUDA ops.

    eager: reference preprocessing on the CPU, upload, eager NCHW trunk (cuDNN).
    native: upload the raw images, ``emclassify::preprocess`` and ``emclassify::conv_trunk`` on the GPU.
    shipped: what ``batch`` does with a GPU: the native preprocessing on the CPU, upload, then the
    trunk's PyTorch layers (cuDNN; :func:`emclassify.ops.native_preferred`).
    Also the trunks alone on the same preprocessed GPU batch. images/s, synchronised.
    """
    dev = torch.device("cuda")
    gpu_model = copy.deepcopy(model).to(dev).eval()
    chunks = list(zip(batched(images, batch), batched(masks, batch)))
    sync = torch.cuda.synchronize

    def eager():
        with torch.no_grad(), native_disabled():
            for im, mk in chunks:
                gpu_model.trunk(preprocess_reference(im, mk, cfg).to(dev))
        sync()

    def native():
        with torch.inference_mode():
            for im, mk in chunks:
                gpu_model.fused_trunk(ops.preprocess(im, mk, cfg, native=True, device=dev), native=True)
        sync()

    def shipped():
        with torch.inference_mode():
            for im, mk in chunks:
                gpu_model.feature_maps(ops.preprocess(im, mk, cfg).to(dev))
        sync()

    x = ops.preprocess(images[:batch], masks[:batch], cfg, native=True).to(dev)
    n = len(images)

    def trunk_eager():
        with torch.no_grad(), native_disabled():
            gpu_model.trunk(x)
        sync()

    def trunk_native():
        with torch.inference_mode():
            gpu_model.fused_trunk(x, native=True)
        sync()

    out = {
        "device": torch.cuda.get_device_name(dev),
        "batch": batch,
        "preprocess_and_trunk": {"eager": n / best_time(eager, repeats), "native": n / best_time(native, repeats),
                                 "shipped": n / best_time(shipped, repeats)},
        "trunk_alone": {"eager": x.shape[0] / best_time(trunk_eager, repeats),
                        "native": x.shape[0] / best_time(trunk_native, repeats)},
    }
    return out


# --------------------------------------------------------------------------- the run


def make_folder(path: Path, n: int, seed: int) -> Path:
    from . import synth

    synth.generate(path, "lamellarity", n, seed=seed)
    return path


def _load_all(folder: Path) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
    images, masks = [], []
    for s in list_images(folder).samples:
        img = read_image(s.path).array
        images.append(img)
        masks.append(read_mask(s.mask, img.shape) if s.mask else None)
    return images, masks


def _each(fn: Callable, batches: Sequence) -> None:
    """``fn`` on every batch, dropping each output at once (keeping them all would time memory pressure)."""
    for b in batches:
        fn(b)


def _naive_end_to_end(folder: Path, model: nn.Module, cfg: PreprocessConfig, batch: int) -> np.ndarray:
    """Sequential ``tifffile.imread`` -> reference preprocessing -> eager model, batch by batch."""
    import tifffile

    preds = []
    with torch.no_grad(), native_disabled():
        for chunk in batched(list_images(folder).samples, batch):
            imgs, msks = [], []
            for s in chunk:
                imgs.append(tifffile.imread(s.path))
                msks.append(tifffile.imread(s.mask) != 0 if s.mask else None)
            preds.append(model(preprocess_reference(imgs, msks, cfg)).argmax(1).numpy())
    return np.concatenate(preds)


def _folder_end_to_end(folder: Path, classifier: Classifier, batch: int) -> np.ndarray:
    """emclassify's folder pipeline (threaded decode, prefetch) with whatever model/ops are active."""
    preds = []
    for b in classify_folder(folder, classifier, batch_size=batch):
        preds.extend(classifier.classes.index(r.predicted_class) for r in b.results)
    return np.asarray(preds)


def _threaded_reference(images, masks, cfg: PreprocessConfig, batch: int) -> torch.Tensor:
    """The reference preprocessing spread over threads (it releases the GIL in numpy/torch)."""
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        parts = pool.map(lambda ab: preprocess_reference(ab[0], ab[1], cfg),
                         zip(batched(images, batch), batched(masks, batch)))
        return torch.cat(list(parts))


def _load_model(cfg: BenchConfig) -> Tuple[TrainedModel, str]:
    if cfg.arch is None:
        trained = load_model(default_model_path())
        return trained, f"bundled model ({trained.card.arch}, {len(trained.card.classes)} classes)"
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, 2, cfg.input_size).eval()
    trained = load_model(default_model_path())  # borrow its card; replace what differs
    card = copy.copy(trained.card)
    card.arch, card.classes = cfg.arch, ["unilamellar", "multilamellar"]  # run() sets the input size
    return TrainedModel(model, card), f"{cfg.arch} (random weights, 2 classes)"


def run(cfg: BenchConfig, log: Callable[[str], None] = print) -> Dict:
    """Run every measurement; returns a JSON-able dict (see :func:`format_markdown`)."""
    if not native_available():
        raise RuntimeError("the native library is not loaded: nothing to compare (see emclassify --version)")
    trained, model_desc = _load_model(cfg)
    if not isinstance(trained.model, LipNet):
        raise ValueError("bench needs a CNN (lipnet*) model")
    if trained.card.preprocess.size != cfg.input_size:
        trained.card.preprocess = PreprocessConfig(**{**trained.card.preprocess.__dict__, "size": cfg.input_size})
    result: Dict = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_description(),
        "torch": torch.__version__,
        "backend": backend_description(),
        "threads": torch.get_num_threads(),
        "model": model_desc,
        "input_size": cfg.input_size,
        "batch_size": cfg.batch_size,
        "repeats": cfg.repeats,
    }
    with contextlib.ExitStack() as stack:
        folder = cfg.folder
        if folder is None or not (Path(folder) / "manifest.csv").is_file():
            folder = Path(folder) if folder else Path(stack.enter_context(tempfile.TemporaryDirectory()))
            log(f"generating {cfg.n_images} synthetic particles in {folder} ...")
            make_folder(folder, cfg.n_images, cfg.seed)
        folder = Path(folder)
        images, masks = _load_all(folder)
        sides = [max(im.shape) for im in images]
        result.update(folder=str(folder), n_images=len(images),
                      particle_side_px=[int(min(sides)), int(np.median(sides)), int(max(sides))])
        log(f"{len(images)} images, {min(sides)}-{max(sides)} px; model: {model_desc}; {result['threads']} threads")
        result.update(_measure_preprocessing(cfg, trained, images, masks, log))
        x = ops.preprocess(images, masks, trained.card.preprocess, native=True)
        images = masks = None  # free the decoded images
        models, variants = _measure_models(cfg, trained.model, x, log)
        result.update(models)
        x = None
        gc.collect()
        result.update(_measure_end_to_end(cfg, trained, variants[result["tuned_best"]], folder, log))
    return result


def _measure_preprocessing(cfg: BenchConfig, trained: TrainedModel, images, masks, log) -> Dict:
    """Preprocessing alone (in-memory images), and the GPU section when there is a GPU."""
    log("preprocessing alone ...")
    pcfg, n = trained.card.preprocess, len(images)
    naive = best_time(lambda: preprocess_reference(images, masks, pcfg), 1)
    threaded = best_time(lambda: _threaded_reference(images, masks, pcfg, cfg.batch_size), 1)
    native = best_time(lambda: ops.preprocess(images, masks, pcfg, native=True), cfg.repeats)
    out: Dict = {
        "preprocess": {"naive": n / naive, "tuned": n / min(naive, threaded), "native": n / native},
        "preprocess_tuned_variant": (
            "reference over a thread pool" if threaded < naive else
            "reference in one call (a thread pool was slower: the reference holds the GIL)"),
    }
    if torch.cuda.is_available():
        log("GPU ...")
        try:
            if not native_cuda_built():
                raise RuntimeError("emclassify._C was built without CUDA kernels")
            out["gpu"] = gpu_measurements(trained.model, images, masks, pcfg, 512, cfg.repeats)
        except Exception as exc:  # noqa: BLE001 - reported, the CPU figures still stand
            out["gpu"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  {out['gpu']}")
    return out


def _measure_models(cfg: BenchConfig, model: LipNet, x: torch.Tensor, log) -> Tuple[Dict, Dict]:
    """Model alone and trunk alone on preprocessed batches: eager, every tuned variant, native;
    the trunk's GFLOP/s against the GEMM ceiling. Returns (figures, the tuned variants)."""
    log("model alone ...")
    n, batches = x.shape[0], batched(x, cfg.batch_size)
    ceiling = gemm_ceiling(cfg.repeats)
    flop_per_image = 2.0 * count_macs(model, cfg.input_size, trunk_only=True)

    def rate(fn) -> float:
        # inference_mode as in Classifier.predict_proba, so compiled graphs are reused end to end.
        with torch.inference_mode():
            return n / best_time(lambda: _each(fn, batches), cfg.repeats)

    with native_disabled():
        naive_model, naive_trunk = rate(model), rate(model.trunk)
    tuned, compile_s = {}, None
    variants = tuned_variants(model, cfg.try_compile)
    for name, variant in variants.items():
        if variant is None:
            tuned[name] = {"error": name}
            continue
        try:
            with native_disabled():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    variant(batches[0]), variant.feature_maps(batches[0])  # compile (when compiling)
                first_call_s = time.perf_counter() - t0
                tuned[name] = {"model": rate(variant), "trunk": rate(variant.feature_maps)}
            if "compile" in name:
                compile_s = first_call_s
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
            tuned[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        log(f"  {name}: {tuned[name]}")
    best = max((k for k in tuned if "model" in tuned[k]), key=lambda k: tuned[k]["model"])
    best_trunk = max((k for k in tuned if "trunk" in tuned[k]), key=lambda k: tuned[k]["trunk"])
    trunk_rates = {"naive": naive_trunk, "tuned": tuned[best_trunk]["trunk"], "native": rate(model.fused_trunk)}

    def trunk_figures(r: float) -> Dict:
        gflops = r * flop_per_image / 1e9
        return {"images_per_s": r, "gflops": gflops, "of_ceiling": gflops / ceiling["ceiling"]}

    figures = {
        "gemm_gflops": ceiling,
        "tuned_variants": tuned,
        "tuned_best": best,
        "compile_seconds": compile_s,
        "model_alone": {"naive": naive_model, "tuned": tuned[best]["model"], "native": rate(model)},
        "trunk": {k: trunk_figures(r) for k, r in trunk_rates.items()},
        "trunk_tuned_variant": best_trunk,
        "trunk_gflop_per_image": flop_per_image / 1e9,
    }
    return figures, variants


def _measure_end_to_end(cfg: BenchConfig, trained: TrainedModel, tuned_model: nn.Module, folder: Path, log) -> Dict:
    """From files to predicted classes, three ways; peak memory of each; do the predictions agree."""
    log("end to end ...")
    n = len(list_images(folder).samples)
    e2e, rss, preds = {}, {}, {}

    def timed(name, fn):
        # One untimed pass first (it also compiles what a compiled variant meets only here:
        # inference tensors, the last batch's size), then the best of up to two timed passes.
        _reset_peak_rss()
        preds[name] = fn()
        rss[name] = peak_rss_mb()
        e2e[name] = n / best_time(fn, min(cfg.repeats, 2), warmup=False)
        log(f"  {name}: {e2e[name]:.0f} images/s" + (f", peak RSS {rss[name]:.0f} MB" if rss[name] else ""))

    tuned_clf = Classifier(trained, device="cpu")
    tuned_clf.model = tuned_model
    with native_disabled():
        timed("naive", lambda: _naive_end_to_end(folder, trained.model, trained.card.preprocess, cfg.batch_size))
        timed("tuned", lambda: _folder_end_to_end(folder, tuned_clf, cfg.batch_size))
    timed("native", lambda: _folder_end_to_end(folder, Classifier(trained, device="cpu"), cfg.batch_size))
    return {
        "end_to_end": e2e,
        "peak_rss_mb": rss,
        "predictions_agree": {k: int((preds[k] == preds["native"]).sum()) for k in ("naive", "tuned")},
    }


def machine_description() -> str:
    """The CPU's name, with its family and model numbers where the name alone does not say which
    generation it is (a VM's "AMD EPYC" is Zen 4 as family 25 model 17, Zen 5 as family 26, whose
    512-bit floating-point rates differ 2x), the logical CPU count and the OS."""
    cpu = platform.processor() or platform.machine()
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:
                break  # the first CPU's block is enough
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    if "cpu family" in fields and "model" in fields:
        cpu += f" (family {fields['cpu family']}, model {fields['model']})"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def format_markdown(r: Dict) -> str:
    """The result as the tables recorded in BENCHMARKS.md."""

    def ratio(d, a, b):
        return d[a] / d[b]

    lines = [
        f"- date: {r['date']}; machine: {r['machine']}; torch {r['torch']}; {r['threads']} threads",
        f"- backend: {r['backend']}; model: {r['model']}; input {r['input_size']}×{r['input_size']}; "
        f"batch {r['batch_size']}; {r['n_images']} TIFF particles "
        f"({r['particle_side_px'][0]}–{r['particle_side_px'][2]} px, median {r['particle_side_px'][1]})",
        f"- tuned preprocessing: {r['preprocess_tuned_variant']}",
        f"- tuned plain PyTorch = fastest model variant: **{r['tuned_best']}**"
        + (f" (compile took {r['compile_seconds']:.0f} s, not timed)" if r.get("compile_seconds") else ""),
        "",
        "| images/s | naive | tuned PyTorch | native | native ÷ naive | native ÷ tuned |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("preprocess", "preprocessing alone"), ("model_alone", "model alone"),
                       ("end_to_end", "end to end")):
        d = r[key]
        lines.append(f"| {label} | {d['naive']:.0f} | {d['tuned']:.0f} | {d['native']:.0f} | "
                     f"{ratio(d, 'native', 'naive'):.2f}× | {ratio(d, 'native', 'tuned'):.2f}× |")
    g = r["gemm_gflops"]
    lines += [
        "",
        f"Conv trunk ({r['trunk_gflop_per_image'] * 1e3:.1f} MFLOP per image) against the FP32 GEMM ceiling "
        f"{g['ceiling']:.0f} GFLOP/s (best of MKL torch.mm {g['mkl']:.0f}, oneDNN matmul {g['onednn']:.0f}):",
        "",
        "| trunk | GFLOP/s | of ceiling |",
        "|---|---:|---:|",
    ]
    for k, label in (("naive", "eager NCHW"), ("tuned", f"tuned: {r['trunk_tuned_variant']}"), ("native", "native conv_trunk")):
        t = r["trunk"][k]
        lines.append(f"| {label} | {t['gflops']:.0f} | {100 * t['of_ceiling']:.0f} % |")
    rss = r["peak_rss_mb"]
    if all(v is not None for v in rss.values()):
        lines += ["", "Peak resident memory, end to end: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items())]
    gpu = r.get("gpu")
    if gpu and "error" not in gpu:
        pt, ta = gpu["preprocess_and_trunk"], gpu["trunk_alone"]
        lines += [
            "", f"GPU ({gpu['device']}), batch {gpu['batch']}, images/s:", "",
            "| | cuDNN eager | native CUDA | native ÷ eager |", "|---|---:|---:|---:|",
            f"| preprocessing + trunk | {pt['eager']:.0f} | {pt['native']:.0f} | {pt['native'] / pt['eager']:.2f}× |",
            f"| trunk alone | {ta['eager']:.0f} | {ta['native']:.0f} | {ta['native'] / ta['eager']:.2f}× |",
        ]
        if "shipped" in pt:
            lines += ["", f"What `batch` runs (native CPU preprocessing, cuDNN trunk): {pt['shipped']:.0f} images/s, "
                          f"{pt['shipped'] / pt['eager']:.2f}× eager."]
    elif gpu:
        lines += ["", f"GPU: {gpu['error']}"]
    agree = r["predictions_agree"]
    lines += ["", f"Predicted classes equal to native: naive {agree['naive']}/{r['n_images']}, "
                  f"tuned {agree['tuned']}/{r['n_images']}."]
    tv = ", ".join(
        f"{k}: " + (f"model {v['model']:.0f}/s, trunk {v['trunk']:.0f}/s" if "model" in v else v["error"])
        for k, v in r["tuned_variants"].items()
    )
    lines += ["", f"Tuned variants raced (images/s): {tv}."]
    return "\n".join(lines)
