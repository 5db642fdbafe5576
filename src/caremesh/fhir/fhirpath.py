"""Strict parsing of FHIRPath expressions (FHIRPath N1, through fhirpathpy's ANTLR grammar).

fhirpathpy's own parser recovers from syntax errors silently and evaluates what it could read;
`parse_fhirpath` refuses any expression the grammar does not accept as a whole.
"""

from __future__ import annotations

from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token  # type: ignore[import-untyped]
from antlr4.error.ErrorListener import ErrorListener  # type: ignore[import-untyped]
from fhirpathpy.parser import parse as fhirpath_parse
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from caremesh.errors import ConfigurationError


class _Strict(ErrorListener):  # type: ignore[misc]
    """fhirpathpy's parser recovers from syntax errors silently; this listener refuses them."""

    def syntaxError(  # noqa: N802, PLR0917 - ANTLR's name and signature
        self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise SyntaxError(column)


def _check_syntax(text: str) -> None:
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Strict())
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_Strict())
    parser.expression()
    if tokens.LA(1) != Token.EOF:
        raise SyntaxError(tokens.index)


def parse_fhirpath(text: str) -> Any:
    """Parse a FHIRPath expression with fhirpathpy, or raise ConfigurationError."""
    try:
        _check_syntax(text)
        return fhirpath_parse(text)  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - the lexer and parser raise assorted exception types
        raise ConfigurationError(f"invalid FHIRPath expression: {text!r}") from None
