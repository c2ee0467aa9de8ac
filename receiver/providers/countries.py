"""Country names and codes to ISO 3166-1 alpha-2, for every provider.

Providers name countries in several ways: PostGrid sends alpha-2 codes, Lob full English names in upper case
(`UNITED STATES`, `KOREA, REPUBLIC OF`, `CÔTE D'IVOIRE`, …), Postalytics whatever the mailing list held. Names,
official names, common names and alpha-3 codes come from `pycountry` (the ISO 3166 database); a short alias table
adds the everyday names ISO does not use (`SOUTH KOREA`, `RUSSIA`, `TURKEY`, `UK`, …) and Lob's own spellings that
differ from ISO's. An unknown name gives no country rather than a wrong one.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

import pycountry

_NON_ALNUM = re.compile(r"[^A-Z0-9]+")
_SAINT = re.compile(r"\bST\b")
_PARENTHESIS = re.compile(r"\s*\([^)]*\)")

# Everyday or provider spellings (normalized as `_norm` does) that are not ISO names.
_ALIASES = {
    "USA": "US", "U S": "US", "U S A": "US", "AMERICA": "US", "UNITED STATES OF AMERICA": "US",
    "UK": "GB", "U K": "GB", "GREAT BRITAIN": "GB", "BRITAIN": "GB", "ENGLAND": "GB", "SCOTLAND": "GB", "WALES": "GB",
    "NORTHERN IRELAND": "GB",
    "SOUTH KOREA": "KR", "KOREA SOUTH": "KR", "REPUBLIC OF KOREA": "KR", "NORTH KOREA": "KP", "KOREA NORTH": "KP",
    "RUSSIA": "RU", "TURKEY": "TR", "MACEDONIA": "MK", "IVORY COAST": "CI", "CAPE VERDE": "CV", "BURMA": "MM",
    "BRUNEI": "BN", "VATICAN": "VA", "VATICAN CITY": "VA", "HOLLAND": "NL", "SWAZILAND": "SZ", "MICRONESIA": "FM",
    "PALESTINE": "PS", "KOSOVO": "XK", "LAOS": "LA", "VIETNAM": "VN", "SYRIA": "SY", "IRAN": "IR", "BOLIVIA": "BO",
    "VENEZUELA": "VE", "TANZANIA": "TZ", "MOLDOVA": "MD", "TAIWAN": "TW", "MACAU": "MO", "CZECH REPUBLIC": "CZ",
    "EAST TIMOR": "TL", "REPUBLIC OF IRELAND": "IE", "CONGO DEMOCRATIC REPUBLIC OF THE": "CD",
    "DEMOCRATIC REPUBLIC OF THE CONGO": "CD", "DR CONGO": "CD", "BONAIRE SAINT EUSTATIUS AND SABA": "BQ",
    "SAINT HELENA": "SH", "NETHERLAND ANTILLES": "AN", "NETHERLANDS ANTILLES": "AN",
}


def _norm(text: str) -> str:
    """Upper case ASCII words: accents dropped, punctuation to spaces, `ST` → `SAINT`, no leading `THE`."""
    folded = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in folded if not unicodedata.combining(c)).upper().replace("&", " AND ")
    words = _NON_ALNUM.sub(" ", ascii_text).strip()
    words = _SAINT.sub("SAINT", words)
    return words.removeprefix("THE ")


def _index() -> tuple[dict[str, str], dict[str, str]]:
    """(normalized name → alpha-2, alpha-3 → alpha-2), from pycountry plus the aliases."""
    names: dict[str, str] = {}
    alpha3: dict[str, str] = {}
    for db in (pycountry.historic_countries, pycountry.countries):  # current entries win
        for country in db:
            code = getattr(country, "alpha_2", None)
            if not code:
                continue
            alpha3[country.alpha_3] = code
            for attr in ("name", "official_name", "common_name"):
                value = getattr(country, attr, None)
                if value:
                    names[_norm(value)] = code
                    names.setdefault(_norm(_PARENTHESIS.sub("", value)), code)  # `Holy See (Vatican City State)`
    names.update(_ALIASES)
    return names, alpha3


_NAMES, _ALPHA3 = _index()
_CA_POSTAL = re.compile(r"^[A-Za-z]\d[A-Za-z][ -]?\d[A-Za-z]\d$")
_US_ZIP = re.compile(r"^\d{5}(-\d{4})?$")


@lru_cache(maxsize=2048)
def _resolve(text: str) -> str | None:
    upper = text.upper()
    if len(upper) == 2 and upper.isalpha():
        return "GB" if upper == "UK" else upper  # any two letters: a code (user-assigned ones such as XK too)
    if len(upper) == 3 and upper.isalpha() and upper in _ALPHA3:
        return _ALPHA3[upper]
    return _NAMES.get(_norm(text))


def country_code(value: Any, postal_code: str | None = None) -> str | None:
    """ISO 3166-1 alpha-2 from a code, an alpha-3 code or a name; inferred from a Canadian or US postal code
    when no country is given; None for a name nobody knows."""
    text = value.strip()[:200] if isinstance(value, str) else None
    if text:
        return _resolve(text)
    if postal_code:
        if _CA_POSTAL.match(postal_code.strip()):
            return "CA"
        if _US_ZIP.match(postal_code.strip()):
            return "US"
    return None
