"""include/sources.yaml: the shipped file is valid; malformed files name the source and the field."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from tasks.collect.sources import load_sources
from tasks.settings import DEFAULT_INCLUDE_DIR, ConfigError, Settings


def write_sources(tmp_path, monkeypatch, body: str) -> Settings:
    include = tmp_path / "include"
    include.mkdir(exist_ok=True)
    (include / "sources.yaml").write_text(textwrap.dedent(body))
    monkeypatch.setenv("VIGIL_INCLUDE_DIR", str(include))
    return Settings()


def test_shipped_file_has_an_enabled_inbox_and_disabled_examples():
    sources = load_sources(Settings(include_dir=DEFAULT_INCLUDE_DIR))
    assert [s.name for s in sources.enabled] == ["inbox"]
    by_kind = {s.kind: s for s in sources.sources}
    assert set(by_kind) == {"x", "mastodon", "folder"}
    assert by_kind["folder"].options.path == "."
    assert by_kind["mastodon"].options.instance == "https://mastodon.social"
    assert by_kind["x"].query.hashtags == ["aiart", "AIgenerated"]


def test_defaults_and_cleaning(tmp_path, monkeypatch):
    settings = write_sources(
        tmp_path,
        monkeypatch,
        """
        sources:
          - name: art
            kind: mastodon
            schedule: "@daily"
            query: {hashtags: ["#aiart"]}
            options: {instance: "https://example.social/"}
    """,
    )
    source = load_sources(settings).get("art")
    assert source.enabled and source.max_images == 100 and source.label_prior == "unknown"
    assert source.query.hashtags == ["aiart"]
    assert source.options.instance == "https://example.social" and source.options.scope == "all"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{name: m_art, kind: mastodon, schedule: '61 * * * *', options: {instance: 'https://a.b'}}",
            r"sources\[1\] \(name='m_art'\)\.schedule: '61 \* \* \* \*' is not a cron expression",
        ),
        (
            "{name: m_art, kind: mastodon, schedule: '@sometimes', options: {instance: 'https://a.b'}}",
            r"sources\[1\] \(name='m_art'\)\.schedule: .*preset \(@hourly",
        ),
        (
            "{name: m_art, kind: mastodon, schedule: '@daily', options: {}}",
            r"sources\[1\] \(name='m_art'\)\.options: instance: Field required",
        ),
        (
            "{name: m_art, kind: mastodon, schedule: '@daily', options: {instance: 'mastodon.social'}}",
            r"sources\[1\] \(name='m_art'\)\.options: instance: Value error, must be an http\(s\) URL",
        ),
        (
            "{name: m_art, kind: mastodon, schedule: '@daily', options: {instance: 'https://a.b', colour: red}}",
            r"sources\[1\] \(name='m_art'\)\.options: colour: Extra inputs are not permitted",
        ),
        (
            "{name: m_art, kind: bluesky, schedule: '@daily'}",
            r"sources\[1\] \(name='m_art'\)\.kind: unknown source kind 'bluesky'; accepted: folder, mastodon, x",
        ),
        (
            "{name: M-Art, kind: folder, schedule: '@daily'}",
            r"sources\[1\] \(name='M-Art'\)\.name: String should match",
        ),
        (
            "{name: m_art, kind: folder, schedule: '@daily', label_prior: maybe}",
            r"sources\[1\] \(name='m_art'\)\.label_prior: Input should be 'fake', 'real' or 'unknown'",
        ),
        (
            "{name: m_art, kind: folder, schedule: '@daily', max_images: 0}",
            r"sources\[1\] \(name='m_art'\)\.max_images: Input should be greater than 0",
        ),
        ("{name: m_art, kind: folder}", r"sources\[1\] \(name='m_art'\)\.schedule: Field required"),
        (
            "{name: m_art, kind: mastodon, schedule: '@daily', query: {terms: [cats]}, options: {instance: 'https://a.b'}}",
            r"sources\[1\] \(name='m_art'\): .*query.terms is not supported by kind 'mastodon' \(supported query fields: "
            r"hashtags\)",
        ),
        (
            "{name: m_art, kind: folder, schedule: '@daily', shedule: '@hourly'}",
            r"sources\[1\] \(name='m_art'\)\.shedule: Extra inputs are not permitted",
        ),
        ("{name: inbox, kind: folder, schedule: '@daily'}", r"sources: .*duplicate source name 'inbox'"),
    ],
)
def test_malformed_entries_name_source_and_field(tmp_path, monkeypatch, entry, message):
    settings = write_sources(
        tmp_path,
        monkeypatch,
        f"""
        sources:
          - {{name: inbox, kind: folder, schedule: "@hourly"}}
          - {entry}
    """,
    )
    with pytest.raises(ConfigError, match=message) as info:
        load_sources(settings)
    assert "sources.yaml" in str(info.value)


def test_not_yaml_and_missing_file(tmp_path, monkeypatch):
    settings = write_sources(tmp_path, monkeypatch, "sources: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sources(settings)
    with pytest.raises(ConfigError, match="file not found"):
        load_sources(Settings(include_dir=tmp_path / "nowhere"))


def test_unknown_source_lists_the_known_ones(tmp_path):
    include = tmp_path / "include"
    shutil.copytree(DEFAULT_INCLUDE_DIR, include)
    with pytest.raises(LookupError, match="no source named 'nope'.*inbox, x_ai_art, mastodon_photography"):
        load_sources(Settings(include_dir=include)).get("nope")
