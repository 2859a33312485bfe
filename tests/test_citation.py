"""CITATION.cff: a Citation File Format 1.2.0 file for the pipeline that names Burda et al. as
the work it reproduces, and agrees with pyproject.toml. The whole schema is checked where
cffconvert is installed; the lock lacks it, since it needs jsonschema<4 and would hold back the
jsonschema that Snakemake checks configs with (README, "How to cite")."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# the keys of CFF 1.2.0 (its schema.json): at the top, and of a person or an entity
KEYS = {"abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi", "identifiers",
        "keywords", "license", "license-url", "message", "preferred-citation", "references", "repository",
        "repository-artifact", "repository-code", "title", "type", "url", "version"}  # fmt: skip
REQUIRED = {"cff-version", "message", "title", "authors"}
PERSON = {"address", "affiliation", "alias", "city", "country", "email", "family-names", "fax", "given-names",
          "name-particle", "name-suffix", "orcid", "post-code", "region", "tel", "website"}  # fmt: skip
ENTITY = {"address", "alias", "city", "country", "date-end", "date-start", "email", "fax", "location", "name",
          "orcid", "post-code", "region", "tel", "website"}  # fmt: skip


def _cff() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def _check_authors(authors, where):
    assert isinstance(authors, list) and authors, f"{where}: no authors"
    for author in authors:
        if "name" in author:
            assert set(author) <= ENTITY, f"{where}: {author}"
        else:
            assert "family-names" in author and set(author) <= PERSON, f"{where}: {author}"


def test_the_required_keys_and_nothing_unknown():
    cff = _cff()
    assert REQUIRED <= set(cff), f"missing {REQUIRED - set(cff)}"
    assert set(cff) <= KEYS, f"not keys of CFF 1.2.0: {set(cff) - KEYS}"
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert isinstance(cff["message"], str) and "cite" in cff["message"]
    assert isinstance(cff["title"], str) and cff["title"]
    _check_authors(cff["authors"], "authors")


def test_version_and_license_are_pyprojects():
    cff, project = _cff(), tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"]
    assert cff["license"] == project["license"]


def test_it_names_burda_et_al_as_the_work_it_reproduces():
    papers = [ref for ref in _cff()["references"] if ref["title"] == "Importance Weighted Autoencoders"]
    assert len(papers) == 1
    paper = papers[0]
    assert paper["type"] in ("conference-paper", "article")
    _check_authors(paper["authors"], "the paper's authors")
    names = [(a["given-names"], a["family-names"]) for a in paper["authors"]]
    assert names == [("Yuri", "Burda"), ("Roger", "Grosse"), ("Ruslan", "Salakhutdinov")]
    assert paper["year"] == 2016
    assert "ICLR" in paper["conference"]["name"]
    assert {"type": "other", "value": "arXiv:1509.00519"}.items() <= paper["identifiers"][0].items()
    assert paper["url"] == "https://arxiv.org/abs/1509.00519"


def test_the_readme_says_how_to_cite():
    readme = (ROOT / "README.md").read_text()
    assert "## How to cite" in readme and "CITATION.cff" in readme and "1509.00519" in readme


def test_the_whole_schema():
    """CFF 1.2.0's schema, as cffconvert ships it, where cffconvert is installed."""
    spec = importlib.util.find_spec("cffconvert")  # its schema file; importing it needs jsonschema<4
    if spec is None:
        pytest.skip("cffconvert is not installed")
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(spec.origin).parent / "schemas/1.2.0/schema.json").read_text())
    jsonschema.validate(_cff(), schema)
