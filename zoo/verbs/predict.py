"""`zoo predict`: run a checkpoint on an input — a file, a folder or a glob of files the task reads,
a prompt, or a sample of a dataset — and draw the results."""

from __future__ import annotations

import contextlib
import glob
import os
import warnings
from pathlib import Path

from pydantic import Field

from zoo._io import next_numbered_dir
from zoo.errors import DataError
from zoo.loading import dataset_for, is_checkpoint_dir, load, options_for
from zoo.options import Options

AUTO = "auto"   # save=AUTO: pictures go to runs/predict/<name>-N (the CLI's default, as ultralytics does)
RUNS = Path("runs") / "predict"


#: the most pixels an input image may claim (PIL's own hard limit by default): a tiny file whose
#: header says 30000x30000 would otherwise be decoded into gigabytes
MAX_PIXELS_ENV = "ZOO_MAX_IMAGE_PIXELS"
MAX_PIXELS = 178_956_970


@contextlib.contextmanager
def image_pixel_limit():
    """Refuse, in one line, any image larger than the limit while predicting (every task's reader
    opens images through PIL, which checks the header before decoding)."""
    try:
        from PIL import Image
    except ImportError:   # a task without images
        yield
        return
    try:
        limit = int(os.environ.get(MAX_PIXELS_ENV) or MAX_PIXELS)
    except ValueError:
        raise DataError(f"{MAX_PIXELS_ENV} must be a whole number of pixels") from None
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            # PIL only warns between the limit and twice it: a warning here is a refusal too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = str(exc).split("(")[1].split(")")[0] if "(" in str(exc) else "too many pixels"
        raise DataError(f"image too large ({size}; the limit is {limit} pixels, set {MAX_PIXELS_ENV} "
                        f"to raise it): refusing a possible decompression bomb") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


class PredictOptions(Options):
    split: str = Field("test", description="split of --dataset/--data to draw the sample from")


#: what a picture can be saved as (matplotlib's and PIL's common formats)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".webp", ".tif", ".tiff")


def _writable_parent(path: Path) -> None:
    """One line when a folder on the way to `path` is a file (mkdir would fail deep inside)."""
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise DataError(f"{path}: cannot write there, {parent} is a file, not a folder")
            return


def picture_path(save: Path, name: str) -> Path:
    """Where one picture goes for `--save SAVE`: SAVE itself when it names a picture file, else
    the folder SAVE (existing, or a name without a suffix) with the picture `name` inside."""
    try:
        os.fsencode(str(save)).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"--save {str(save)!r}: the path is not valid UTF-8; choose a plain name") from None
    if save.is_dir() or not save.suffix:
        _writable_parent(save / name)
        return save / name
    if save.suffix.lower() not in PICTURE_SUFFIXES:
        raise DataError(f"--save {save}: unknown picture type '{save.suffix}'; use one of "
                        f"{', '.join(s.lstrip('.') for s in PICTURE_SUFFIXES)}")
    _writable_parent(save)
    return save


def input_files(input: str | None, suffixes: tuple[str, ...]) -> list[Path] | None:
    """The files an INPUT names when it is a folder or a glob of files the task reads (sorted);
    None when it is a single file or not a path at all (a prompt)."""
    if not input or not suffixes:
        return None
    path = Path(input)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise DataError(f"{input}: is a folder with no {'/'.join(s.lstrip('.') for s in suffixes)} files")
        return files
    if glob.has_magic(input):
        files = sorted(Path(p) for p in glob.glob(input, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in suffixes)
        if not files:
            raise DataError(f"{input}: matches no {'/'.join(s.lstrip('.') for s in suffixes)} files")
        return files
    return None


def predict(name: str, input: str | None = None, *, dataset: str | None = None, data: str | None = None,
            save: str | Path | None = None, hub: str | None = None, device: str | None = None,
            options: dict | None = None, backend: str = "eager") -> dict:
    from zoo.backends import check_name
    check_name(backend)
    with image_pixel_limit():
        return _predict(name, input, dataset=dataset, data=data, save=save, hub=hub, device=device,
                        options=options, backend=backend)


def _predict(name: str, input: str | None, *, dataset, data, save, hub, device, options, backend) -> dict:
    from zoo.backends import for_verb
    loaded = load(name, dataset=dataset, hub=hub, require_weights=not is_checkpoint_dir(name), device=device)
    opts = options_for(loaded, "predict", options, PredictOptions)
    task = loaded.task
    # the backend sees the options the task will run with (image size, batch), not the sample split
    model, run = for_verb(loaded, backend, {k: v for k, v in opts.items() if k != "split"})
    files = input_files(input, task.input_suffixes)
    stem = Path(loaded.full_name).name
    if files is not None:
        return {**_predict_many(loaded, model, files, save, stem, opts), **run}
    ds = None
    if dataset or data or (input is None and loaded.dataset):
        ds, _ = dataset_for(loaded, dataset, data, opts.pop("split", "test"), opts)
    if save == AUTO and not task.input_suffixes:
        save = None   # auto-saving is for tasks that read files (pictures of images); ask --save otherwise
    picture_name = f"{Path(input).stem if input and task.input_suffixes else stem}.png"
    if save == AUTO:
        # one picture: the auto folder holds it under the input's (or the model's) name
        save = next_numbered_dir(RUNS, stem) / picture_name
    elif save:
        save = picture_path(Path(save), picture_name)
    out = task.predict(model, input, ds, Path(save) if save else None, opts)
    return {"model": loaded.full_name, **out, **({"saved": str(save)} if save else {}), **run}


def _predict_many(loaded, model, files: list[Path], save, stem: str, opts: dict) -> dict:
    """Each file of a folder or glob, with a picture each in one folder; progress on stderr."""
    from zoo.progress import progress

    if save == AUTO:
        folder = next_numbered_dir(RUNS, stem)
    elif save:
        folder = Path(save)
        if folder.suffix:
            raise DataError(f"{save}: several inputs need a folder for their pictures, not a file name")
        _writable_parent(folder / "x.png")
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = None
    results = []
    for f in progress(files, len(files), f"predict {stem}"):
        picture = folder / f"{f.stem}.png" if folder else None
        if picture is not None and picture.exists() and save != AUTO:
            raise DataError(f"{picture}: exists; choose another --save folder (nothing is overwritten)")
        results.append(loaded.task.predict(model, str(f), None, picture, opts))
    return {"model": loaded.full_name, "inputs": len(files), "results": results,
            **({"saved": str(folder)} if folder else {})}
