import pytest

from volinr.errors import InputError
from volinr.tools.readme import markers, rebase_links, splice_into_readme


def test_generated_sections_replace_only_their_own_text(tmp_path):
    readme = tmp_path / "README.md"
    results, performance = markers("results"), markers("performance")
    readme.write_text(
        f"intro\n{results[0]}\nold\n{results[1]}\nmiddle\n"
        f"{performance[0]}\nold\n{performance[1]}\nend\n"
    )
    splice_into_readme(readme, "new results\n")
    splice_into_readme(readme, "new speed\n", "performance")
    text = readme.read_text()
    assert "old" not in text and "new results" in text and "new speed" in text
    assert text.startswith("intro\n") and "middle" in text and text.endswith("end\n")
    with pytest.raises(InputError, match="missing"):
        splice_into_readme(readme, "x", "absent")


def test_the_readme_has_both_generated_sections():
    from conftest import ROOT

    text = (ROOT / "README.md").read_text()
    for section in ("results", "performance"):
        assert all(marker in text for marker in markers(section))


def test_spliced_markdown_keeps_its_figures_and_links(tmp_path):
    text = (
        "![curves](sweep_curves.png) and [a table](sweep/table.md), "
        "[the web](https://example.org/x.png), [here](#points), [root](/etc/x.md)"
    )
    source = tmp_path / "benchmarks" / "results" / "sweep.md"
    rebased = rebase_links(text, source, tmp_path / "README.md")
    assert rebased == (
        "![curves](benchmarks/results/sweep_curves.png) and "
        "[a table](benchmarks/results/sweep/table.md), "
        "[the web](https://example.org/x.png), [here](#points), [root](/etc/x.md)"
    )
