"""Settings precedence (defaults < env < flags) and the CLI built from the same table."""

from __future__ import annotations

from app.cli.main import build_parser
from app.settings import OPTIONS, load_settings


def test_env_then_flags(tmp_path):
    env = {"SPEECH_GATEWAY_PORT": "9001", "SPEECH_GATEWAY_API_KEYS": "a, b", "SPEECH_GATEWAY_PRELOAD": "true"}
    s = load_settings(environ=env)
    assert s.port == 9001 and s.api_keys == ("a", "b") and s.preload is True
    s = load_settings({"port": 9002, "api_keys": ["c"]}, environ=env)
    assert s.port == 9002 and s.api_keys == ("c",)
    keys = tmp_path / "keys"
    keys.write_text("# comment\n\nk1\n k2 \n")
    assert load_settings({"api_key_file": str(keys)}, environ={}).all_api_keys() == ("k1", "k2")


def test_every_option_is_a_serve_flag():
    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "1234", "--api-key", "x", "--api-key", "y", "--preload"])
    assert args.port == 1234 and args.api_keys == ["x", "y"] and args.preload is True
    serve_help = parser._subparsers._group_actions[0].choices["serve"].format_help()
    for option in OPTIONS:
        assert option.flag in serve_help and option.env in serve_help


def test_configuration_doc_documents_every_option():
    from tests.server import ROOT

    readme = (ROOT / "docs" / "configuration.md").read_text()
    for option in OPTIONS:
        assert f"`{option.flag}`" in readme and f"`{option.env}`" in readme, option.flag


def test_qwen_cpu_threads_default_from_cores_and_instances():
    from app.wiring.qwen import qwen_config, torch_threads

    assert torch_threads(load_settings({}, environ={}), cores=2) == 2
    assert torch_threads(load_settings({"qwen_instances": 2}, environ={}), cores=2) == 1
    assert torch_threads(load_settings({"qwen_instances": 4}, environ={}), cores=2) == 1
    assert torch_threads(load_settings({"qwen_instances": 2, "qwen_threads": 3}, environ={}), cores=2) == 3
    assert torch_threads(load_settings({"device": "cuda:0"}, environ={}), cores=16) is None
    config = qwen_config(load_settings({"qwen_base": "x", "qwen_instances": 64}, environ={}))
    assert config.torch_threads == 1


def test_voice_map_entries_are_checked():
    import pytest

    assert load_settings({"voice_map": ["Nova=ada", "alloy = ryan"]}, environ={}).voice_mapping() == {
        "nova": "ada", "alloy": "ryan"}
    assert load_settings(environ={"SPEECH_GATEWAY_VOICE_MAP": "nova=ada,echo=bob"}).voice_mapping() == {
        "nova": "ada", "echo": "bob"}
    with pytest.raises(SystemExit, match="NAME=VOICE"):
        load_settings({"voice_map": ["nova"]}, environ={}).voice_mapping()


def test_embedded_threads_default_from_cores_and_the_primary_engine():
    from app.wiring.engines import MAX_EMBEDDED_THREADS, embedded_threads

    assert embedded_threads(load_settings({}, environ={}), cores=2) == 2
    assert embedded_threads(load_settings({}, environ={}), cores=64) == MAX_EMBEDDED_THREADS
    assert embedded_threads(load_settings({"engine": "qwen"}, environ={}), cores=16) == 1  # beside Qwen
    assert embedded_threads(load_settings({"embedded_instances": 6}, environ={}), cores=2) == 6
    assert embedded_threads(load_settings(environ={"SPEECH_GATEWAY_EMBEDDED_INSTANCES": "3"}), cores=2) == 3
