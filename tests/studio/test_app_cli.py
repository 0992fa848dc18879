"""app.py's flags: defaults, the login format, and that flags override the environment."""
import argparse

import pytest

import app


def test_defaults_serve_locally_on_7860(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.checkpoint, args.auth, args.share) == ("127.0.0.1", 7860, None, None, False)


def test_auth_takes_user_and_password():
    assert app.parse_args(["--auth", "me:s3:cret"]).auth == ("me", "s3:cret")
    for bad in ("me", ":pw", "me:"):
        with pytest.raises(argparse.ArgumentTypeError):
            app.parse_auth(bad)


def test_space_environment_sets_host_and_port(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    args = app.parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7861)


def test_auth_is_wrapped_in_the_login_back_off_unless_turned_off():
    from studio.login import LoginLimiter
    check = app.login_check(app.parse_args(["--auth", "me:pw"]))
    assert isinstance(check, LoginLimiter) and check.free_failures == 5 and check("me", "pw") and not check("me", "x")
    assert app.login_check(app.parse_args(["--auth", "me:pw", "--login-attempts", "0"])) == ("me", "pw")
    assert app.login_check(app.parse_args([])) is None


def test_backend_flag_overrides_the_environment_and_bad_names_are_refused(capsys):
    from pipeline.settings import StudioSettings
    assert app.parse_args([]).backend is None
    env = StudioSettings.from_env({"DA_STUDIO_BACKEND": "torch"})
    assert env.backend == "torch" and StudioSettings.from_env({}).backend == "auto"
    flags = app.parse_args(["--backend", "onnxruntime"])
    assert env.with_overrides(backend=flags.backend).backend == "onnxruntime"
    with pytest.raises(SystemExit):
        app.parse_args(["--backend", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_startup_objects_are_frozen_out_of_the_collectors_walks():
    """settle_heap: what startup made is never walked by a full collection again (a 1 s pause once
    failed launch()'s own 3 s check of the page)."""
    import gc
    startup = [[i] for i in range(200_000)]                     # stands in for torch/Gradio/the model
    before = gc.get_freeze_count()
    try:
        app.settle_heap()
        assert gc.get_freeze_count() - before >= len(startup)
        walked = {id(o) for o in gc.get_objects()}              # the generations a collection walks
        assert not any(id(x) in walked for x in startup[::1000])
    finally:
        gc.unfreeze()
