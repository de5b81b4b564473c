"""Entry point of ``emclassify-gui`` (and ``emclassify gui``), including ``--selftest``.

``--selftest`` opens the main window offscreen, classifies the bundled sample
folder through the GUI's own code path (the Classify view and its worker
thread), exports the CSV to a temporary folder, checks it, optionally saves a
screenshot (``--screenshot PNG``) and exits 0 only if all of that worked.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import torch  # noqa: F401  - import torch before Qt: avoids a DLL-order clash on Windows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emclassify-gui", description="emclassify desktop application")
    p.add_argument("--selftest", action="store_true", help="classify the bundled samples offscreen and exit 0 if OK")
    p.add_argument("--screenshot", metavar="PNG", help="with --selftest: save a screenshot of the window")
    p.add_argument("--timeout", type=float, default=300, help="with --selftest: seconds before giving up")
    return p


def selftest(window, app, screenshot: str | None, timeout: float) -> int:
    from PySide6.QtCore import QEventLoop, QTimer

    from emclassify.assets import default_model_path, sample_folder
    from emclassify.io import list_images

    tab = window.classify
    tab.folder.setText(str(sample_folder()))
    if not tab.set_model(str(default_model_path())):
        print(f"selftest: cannot load the bundled model: {tab.card.toPlainText()}", file=sys.stderr)
        return 1
    loop = QEventLoop()
    tab.finished.connect(loop.quit)
    QTimer.singleShot(int(timeout * 1000), loop.quit)
    tab.run()
    loop.exec()
    expected = len(list_images(sample_folder()).samples)
    problems = []
    if tab.running():   # a job counts as ended from its done/failed signal on (workers.Job.is_running)
        problems.append(f"classification did not finish within {timeout:.0f} s")
    if len(tab.model.rows) != expected:
        problems.append(f"{len(tab.model.rows)} rows in the table, expected {expected}")
    with tempfile.TemporaryDirectory() as d:
        if not problems:
            out = tab.export(Path(d) / "selftest.csv")
            with open(out, newline="") as fh:
                rows = list(csv.DictReader(fh))
            bad = [r["path"] for r in rows if r["status"] != "ok"]
            if len(rows) != expected or bad:
                problems.append(f"exported CSV has {len(rows)} rows, {len(bad)} not ok")
    if screenshot:
        app.processEvents()
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(screenshot, "PNG"):
            problems.append(f"could not save screenshot {screenshot}")
    for p in problems:
        print(f"selftest: {p}", file=sys.stderr)
    if not problems:
        print(f"selftest: OK ({expected} sample images classified and exported)")
    return 1 if problems else 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.selftest:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        import PySide6  # noqa: F401
    except ImportError:
        print("emclassify-gui: the desktop app needs PySide6, which is not installed; install it with "
              "pip install 'emclassify[gui]' (the command line works without it)", file=sys.stderr)
        return 4
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("emclassify")
    app.setOrganizationName("emclassify")
    if args.selftest:
        # a throwaway settings file: the self-test neither reads nor changes the user's settings,
        # and leaves nothing behind
        with tempfile.TemporaryDirectory(prefix="emclassify-selftest-", ignore_cleanup_errors=True) as settings_dir:
            settings = QSettings(os.path.join(settings_dir, "settings.ini"), QSettings.IniFormat)
            window = MainWindow(settings)
            window.resize(1200, 820)
            window.show()
            code = selftest(window, app, args.screenshot, args.timeout)
            # its results are throwaway: a failed self-test must exit, not wait offscreen on the
            # "results not exported" question that closing asks
            window.classify.unsaved = False
            window.close()
        return code
    window = MainWindow()
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
