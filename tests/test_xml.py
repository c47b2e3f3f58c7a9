"""transport.xml: the element builders and readers, and the instants read by slicing."""

from __future__ import annotations

import concurrent.futures
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from transport.errors import MalformedXMLError, SignatureError, UsageError, ValidationError
from transport.xml import (
    Namespace,
    compiled_path,
    find_first,
    format_ts,
    iterparse_xml,
    parse_xml,
    read_datetime,
    read_ts,
)

NS = Namespace("urn:example")


def test_a_namespace_qualifies_each_step_of_a_path() -> None:
    assert NS("a") == "{urn:example}a"
    assert NS("a/b") == "{urn:example}a/{urn:example}b"


def test_builders_leave_out_what_is_not_given() -> None:
    root = NS.root("root", version=None, kind="x")
    NS.sub(root, "empty")
    NS.sub(root, "named", "text", code="c", system=None)
    assert etree.tostring(root) == (
        b'<root xmlns="urn:example" kind="x"><empty/><named code="c">text</named></root>'
    )


def test_readers_tell_a_missing_element_from_an_empty_one() -> None:
    root = etree.fromstring(b'<r xmlns="urn:example"><a> x </a><b/><c><d>y</d></c></r>')
    assert NS.text(root, "a") == "x"
    assert NS.text(root, "b") == ""
    assert NS.text(root, "missing") is None
    assert NS.text(None, "a") is None
    assert NS.text(root, "c/d") == "y"
    assert NS.require(root, "c/d").text == "y"
    with pytest.raises(ValidationError) as missing:
        NS.require(root, "c/e")
    assert missing.value.field == "c/e"
    NS.expect(root, "r")
    with pytest.raises(ValidationError) as unexpected:
        NS.expect(root, "other", "Body")
    assert unexpected.value.field == "Body"


def test_compiled_paths_find_what_lxml_find_finds() -> None:
    soap = "http://www.w3.org/2003/05/soap-envelope"  # a URI with slashes
    root = etree.fromstring(
        f'<s:E xmlns:s="{soap}" xmlns:w="urn:w"><s:H><w:A>1</w:A><w:A>2</w:A><p/></s:H>'
        f"<!-- c --><s:B/></s:E>".encode()
    )
    for path in (f"{{{soap}}}H/{{urn:w}}A", f"{{{soap}}}H/p", f"{{{soap}}}H/*", f"{{{soap}}}B"):
        assert find_first(root, path) is root.find(path)
        assert compiled_path(path)(root) == root.findall(path)
    assert find_first(root, f"{{{soap}}}H/{{urn:other}}A") is None
    assert find_first(None, "a") is None
    assert [element.text for element in NS.findall(etree.fromstring(b'<r xmlns="urn:example">'
        b"<a>1</a><a>2</a></r>"), "a")] == ["1", "2"]  # fmt: skip


def test_a_path_whose_first_branch_has_no_match_finds_a_later_one() -> None:
    root = etree.fromstring(b"<r><h><p/></h><h><a>1</a><a>2</a></h><h><a>3</a></h></r>")
    assert find_first(root, "h/a") is root.find("h/a")
    assert find_first(root, "h/a").text == "1"
    assert [element.text for element in compiled_path("h/a")(root)] == ["1", "2", "3"]
    assert find_first(root, "h/b") is None


def test_a_path_step_without_namespace_matches_only_elements_without_one() -> None:
    root = etree.fromstring(b'<r xmlns:x="urn:x"><x:a>namespaced</x:a><a>plain</a><!-- c --></r>')
    for path in ("a", "{}a", "{urn:x}a", "*", "{urn:x}*"):
        assert compiled_path(path)(root) == root.findall(path)
    assert find_first(root, "a").text == "plain"


@pytest.mark.parametrize("path", ["..", ".", "a[1]", "a//b", "{urn:x}", "@id", "a/text()"])
def test_a_compiled_path_is_only_child_steps(path: str) -> None:
    with pytest.raises(ValueError, match="child steps"):
        compiled_path(path)


def test_hl7_times() -> None:
    assert read_ts("20240506070809") == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert read_ts("20240506") == datetime(2024, 5, 6, tzinfo=UTC)
    assert read_ts("202405060708") == datetime(2024, 5, 6, 7, 8, tzinfo=UTC)
    for bad in ("2024-05-06", "20241306", "2024050607080", "20240230", ""):
        with pytest.raises(ValidationError):
            read_ts(bad, "creationTime")
    paris = timezone(timedelta(hours=2))
    assert format_ts(datetime(2024, 5, 6, 9, 8, 9, tzinfo=paris)) == "20240506070809"
    assert format_ts(datetime(2024, 5, 6, 7, 8, 9)) == "20240506070809"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-06T07:08:09Z", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T07:08:09.123Z", datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)),
        ("2024-05-06T07:08:09.1234567Z", datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)),
        ("2024-05-06T09:08:09+02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        ("2024-05-06T05:08:09-02:00", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
        (" 2024-05-06T07:08:09 ", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)),
    ],
)
def test_xsd_date_times_are_read_as_utc(text: str, expected: datetime) -> None:
    moment = read_datetime(text, "Temps")
    assert moment == expected and moment.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [None, "", "2024-05-06", "2024-05-06 07:08:09Z", "20240506T070809Z", "2024-13-06T07:08:09Z"],
)
def test_what_is_not_an_xsd_date_time_is_refused(text: str | None) -> None:
    with pytest.raises(ValidationError) as refused:
        read_datetime(text, "Temps")
    assert refused.value.field == "Temps"


def test_a_date_time_without_zone_can_be_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        read_datetime("2024-05-06T07:08:09", "IssueInstant", default_zone=None)


NOT_PLAIN_XML = {
    "not XML": b"not xml at all",
    "empty": b"",
    "unclosed": b"<a><b></a>",
    "internal DTD": b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
    "external DTD": b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a/>',
}


@pytest.mark.parametrize("data", NOT_PLAIN_XML.values(), ids=NOT_PLAIN_XML.keys())
def test_what_is_not_plain_xml_is_malformed_input_not_a_signature_refusal(data: bytes) -> None:
    for parse in (parse_xml, lambda data: list(iterparse_xml(io.BytesIO(data)))):
        with pytest.raises(MalformedXMLError) as caught:
            parse(data)
        assert isinstance(caught.value, UsageError)
        assert not isinstance(caught.value, SignatureError)
        assert caught.value.exit_code == 2


def test_the_reused_parser_of_each_thread_keeps_refusing() -> None:
    # parse_xml reuses one parser per thread: a refusal leaves it as strict for the next
    # document, and threads parsing at once each get what they gave.
    def parse_both(number: int) -> str:
        with pytest.raises(MalformedXMLError):
            parse_xml(NOT_PLAIN_XML["internal DTD"])
        return parse_xml(f"<n>{number}</n>".encode()).text

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(parse_both, range(40))) == [str(n) for n in range(40)]
    assert parse_xml(b"<a>&amp;</a>").text == "&"
