"""The README's screenshots, from real runs of the desktop app (offscreen), whole windows.

    QT_QPA_PLATFORM=offscreen python packaging/screenshots.py [docs/images] [--only micrographs]

Classify: the bundled samples with the bundled model. Micrographs: two synthetic 768 px fields
classified as whole micrographs (classical finder), one particle selected. Review: the least confident of them, with
saliency. Train and Cross-validate (3 folds): a synthetic lamellarity set (600 particles at a 60/30/10
mix) with the default settings, so the curves and the confusion matrix are
those of a real model, not a two-epoch test model. Folders are shown by name under a neutral
parent (``~/emclassify-demo/...``) so no temporary path appears in a picture.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication


def wait(signal, seconds: float) -> None:
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def micrographs_shot(app, out: Path, demo: Path, work: Path) -> None:
    from emclassify import synth
    from emclassify.assets import default_model_path
    from emclassify_gui.main_window import MainWindow

    synth.generate_micrographs(demo / "fields", "lamellarity", 2, seed=5, side=768, per_micrograph=16)
    w = MainWindow(QSettings(str(work / "settings-m.ini"), QSettings.IniFormat))
    w.confirm_discard = lambda: True
    w.resize(1280, 860)
    w.show()
    c = w.classify
    c.input_kind.setCurrentIndex(c.input_kind.findData("micrographs"))
    c.folder.setText(str(demo / "fields" / "images"))
    c.set_model(str(demo / "models" / default_model_path().name))
    c.run()
    wait(c.finished, 300)
    c.table.selectRow(2)
    panel = c.micrograph_panel
    for _ in range(120):
        if panel.shown is not None:
            break
        wait(panel.job.done, 1) if panel.job is not None else app.processEvents()
    app.processEvents()
    w.grab().save(str(out / "micrographs.png"))
    w.close()


def main(argv=None) -> int:
    args = list(argv or sys.argv[1:])
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i:i + 2]
    out = Path((args or ["docs/images"])[0])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    from emclassify import synth
    from emclassify.assets import default_model_path, sample_folder
    from emclassify_gui.main_window import MainWindow

    demo = Path.home() / "emclassify-demo"
    work = Path(tempfile.mkdtemp())
    try:
        if demo.exists():
            shutil.rmtree(demo)
        shutil.copytree(sample_folder(), demo / "samples")
        # the bundled model under the demo folder too, so no checkout path appears in a picture
        (demo / "models").mkdir()
        shutil.copy2(default_model_path(), demo / "models")
        micrographs_shot(app, out, demo, work)
        if only == "micrographs":
            return 0
        synth.generate(demo / "lamellarity-600", "lamellarity", 600, seed=7, proportions=(0.6, 0.3, 0.1))
        w = MainWindow(QSettings(str(work / "settings.ini"), QSettings.IniFormat))
        w.confirm_discard = lambda: True
        w.resize(1280, 860)
        w.show()

        c = w.classify
        c.folder.setText(str(demo / "samples"))
        c.set_model(str(demo / "models" / default_model_path().name))
        c.run()
        wait(c.finished, 120)
        c.table.sortByColumn(3, Qt.AscendingOrder)  # least confident first
        w.tabs.setCurrentWidget(c)
        app.processEvents()
        w.grab().save(str(out / "classify.png"))

        r = w.review
        w.tabs.setCurrentWidget(r)
        r.refresh()
        for _ in range(300):  # the saliency of the first particle is computed in a worker thread
            if r.saliency is not None:
                break
            if r.job is not None and r.job.is_running():
                wait(r.job.done, 1)
            app.processEvents()
        app.processEvents()
        w.grab().save(str(out / "review.png"))

        t = w.train
        w.tabs.setCurrentWidget(t)
        t.dataset.setText(str(demo / "lamellarity-600"))
        t.out.setText(str(demo / "lamellarity-600.safetensors"))
        t.start()
        wait(t.finished, 900)
        app.processEvents()
        w.grab().save(str(out / "train.png"))

        v = w.cv
        w.tabs.setCurrentWidget(v)
        v.dataset.setText(str(demo / "lamellarity-600"))
        v.folds.setValue(3)
        v.run()
        wait(v.finished, 1800)
        app.processEvents()
        w.grab().save(str(out / "cross-validate.png"))
        print(f"wrote {', '.join(p.name for p in sorted(out.glob('*.png')))} to {out}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(demo, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
