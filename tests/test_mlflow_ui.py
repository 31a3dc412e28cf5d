"""The MLflow UI shows a real sweep: `mlflow ui` as README starts it, driven in headless Chromium.

The screenshot in README (docs/mlflow_ui.png) is this test's: regenerate it with
`TUNELAB_SCREENSHOT_DIR=docs pytest tests/test_mlflow_ui.py`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# without the background-networking flags Chromium keeps dialling Google on a closed network
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLUMNS_SHOWN = ["val_iou", "val_dice", "val_pixel_error", "epoch"]
COLUMNS_HIDDEN = ["Dataset", "Models", "Source"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium")
def test_mlflow_ui_lists_the_sweep_and_its_trials(env, write_space, sweep, mlflow_service):
    from playwright.sync_api import sync_playwright

    space = write_space(
        "ARMS = {'baseline': {}, 'dropout': {'model.dropout': 0.2}}\nSEEDS = [0, 1]\n", epochs=3
    )
    assert sweep(space) == 0
    uri = os.environ["MLFLOW_TRACKING_URI"]
    experiment = MlflowClient(uri).get_experiment_by_name("tiny")
    ui = mlflow_service("ui", "--backend-store-uri", uri)  # what README tells users to run
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 720})
        page.set_default_timeout(60_000)  # every wait is for an element; a busy machine is slow
        page.goto(f"{ui}/#/experiments/{experiment.experiment_id}/runs")
        page.wait_for_selector("text=tiny sweep")
        assistant = page.get_by_role("button", name="Close")
        if assistant.count():  # MLflow's chat panel, irrelevant here
            assistant.first.click()
        sweep_row = page.locator("[role=gridcell]", has_text="tiny sweep")
        sweep_row.locator("button").first.click()  # unfold the trials nested under it
        for arm in ("baseline", "dropout"):
            for seed in (0, 1):
                page.wait_for_selector(f"text={arm} seed {seed}")
        page.get_by_role("button", name="Columns").first.click()
        for name in COLUMNS_SHOWN + COLUMNS_HIDDEN:
            page.get_by_text(name, exact=True).last.click()
        page.keyboard.press("Escape")
        page.wait_for_selector("[role=columnheader]:has-text('val_iou')")
        shot = env / "mlflow_ui.png"
        page.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if folder := os.environ.get("TUNELAB_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(folder) / shot.name)
