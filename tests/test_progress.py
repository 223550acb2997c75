"""One switch decides how progress shows: a live bar, one summary line, or nothing."""
import re

import pytest

from layersim import progress as pg


@pytest.fixture(autouse=True)
def _clean_mode(monkeypatch):
    monkeypatch.delenv(pg.ENV_VAR, raising=False)
    monkeypatch.delenv("CI", raising=False)
    pg.set_mode(None)
    yield
    pg.set_mode(None)


def test_mode_follows_the_environment_and_ci(monkeypatch):
    assert pg.mode() == "live"  # interactive by default
    monkeypatch.setenv("CI", "true")
    assert pg.mode() == "summary"  # CI logs get one line per step
    monkeypatch.setenv("CI", "false")
    assert pg.mode() == "live"
    monkeypatch.setenv(pg.ENV_VAR, "OFF")
    assert pg.mode() == "off"
    pg.set_mode("summary")  # set_mode wins over the environment, None goes back to it
    assert pg.mode() == "summary"
    pg.set_mode(None)
    assert pg.mode() == "off"


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(pg.ENV_VAR, "quiet")
    with pytest.raises(ValueError, match=r"LAYERSIM_PROGRESS must be one of live, summary, off; got 'quiet'"):
        pg.mode()
    with pytest.raises(ValueError, match="set_mode's argument must be one of"):
        pg.set_mode("loud")
    with pytest.raises(ValueError, match="total must be a non-negative int"):
        pg.progress([1], total=-1)


def test_summary_mode_prints_one_line_after_the_loop(monkeypatch, capsys):
    monkeypatch.setenv(pg.ENV_VAR, "summary")
    seen = list(pg.progress(iter(range(5)), desc="extract minilm-l6", total=5, unit="batch"))
    assert seen == [0, 1, 2, 3, 4]
    out, err = capsys.readouterr()
    assert err == ""  # nothing on stderr: no red block in a notebook
    assert len(out.splitlines()) == 1
    assert re.fullmatch(r"extract minilm-l6: 5 batches in \d+\.\d s\n", out)
    list(pg.progress([1], desc="train"))
    assert re.fullmatch(r"train: 1 item in \d+\.\d s\n", capsys.readouterr().out)


def test_summary_mode_says_where_a_loop_stopped(monkeypatch, capsys):
    monkeypatch.setenv(pg.ENV_VAR, "summary")
    it = pg.progress(range(10), desc="steps", unit="step")
    for i in it:
        if i == 2:
            break
    it.close()
    assert re.fullmatch(r"steps: stopped after 2 of 10 steps \(\d+\.\d s\)\n", capsys.readouterr().out)


def test_off_and_disable_print_nothing(monkeypatch, capsys):
    monkeypatch.setenv(pg.ENV_VAR, "off")
    assert list(pg.progress(range(3), desc="x")) == [0, 1, 2]
    monkeypatch.setenv(pg.ENV_VAR, "summary")
    assert list(pg.progress(range(3), desc="x", disable=True)) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


def test_live_mode_in_a_terminal_is_a_tqdm_bar_on_stderr(capsys):
    assert list(pg.progress(range(4), desc="live bar", unit="batch")) == [0, 1, 2, 3]
    out, err = capsys.readouterr()
    assert out == ""
    assert "live bar" in err and "4/4" in err  # tqdm's bar, with the length taken from len()


def test_batch_environment_silences_bars_but_keeps_off(monkeypatch):
    env = pg.batch_environment()
    assert env[pg.ENV_VAR] == "summary" and env["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv(pg.ENV_VAR, "off")
    assert pg.batch_environment()[pg.ENV_VAR] == "off"
