"""`python -m gsmt_fast.ablation` rewrites only its own section of docs/ABLATIONS.md."""

from gsmt_fast.ablation import DOC_TITLE, SECTION_HEADING, replace_section

NEW = SECTION_HEADING + "\n\nnew table\n"


def test_the_section_is_replaced_and_the_rest_of_the_document_kept():
    doc = (f"{DOC_TITLE}\n\n## Boundary-refined variant\n\nhand table\n\n{SECTION_HEADING}\n\nold table\nold note\n\n"
           "## Reading (written by hand)\n\n- a reading\n")
    out = replace_section(doc, NEW)
    assert out == (f"{DOC_TITLE}\n\n## Boundary-refined variant\n\nhand table\n\n{SECTION_HEADING}\n\nnew table\n\n"
                   "## Reading (written by hand)\n\n- a reading\n")
    assert replace_section(out, NEW) == out  # rerunning changes nothing


def test_a_missing_section_is_appended_and_a_missing_document_gets_a_title():
    doc = f"{DOC_TITLE}\n\n## Other\n\ntext\n"
    assert replace_section(doc, NEW) == f"{DOC_TITLE}\n\n## Other\n\ntext\n\n{NEW}"
    assert replace_section("", NEW) == f"{DOC_TITLE}\n\n{NEW}"
    last = f"{DOC_TITLE}\n\n{SECTION_HEADING}\n\nold\n"  # the section at the end of the document
    assert replace_section(last, NEW) == f"{DOC_TITLE}\n\n{NEW}"


def test_the_shipped_document_has_the_section():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "ABLATIONS.md").read_text()
    assert text.splitlines().count(SECTION_HEADING) == 1
