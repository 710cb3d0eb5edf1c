"""Search: semantic filters + full-text, random-feature prefilter, exact MMD, mixture QP."""

from learndock.search.result import MixtureMatch, SearchResult, SingleMatch

__all__ = ["MixtureMatch", "SearchResult", "SingleMatch"]
