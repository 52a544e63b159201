"""The training cases of ``duda bench``, declared by the methods.

A case is one training step of a method on random data (no dataset is read). A method class
declares its cases in a ``bench_cases`` class method (or attribute) returning
:class:`BenchCase` objects; a method that declares none is one case named after it, on the large
model (twice the crop with a detail crop of the bench crop when it reads ``method.hrda``, the
multi-resolution section). ``duda.deploy.bench`` builds, runs and reports the cases from these
declarations alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from duda.methods.base import Method
from duda.methods.registry import method_class, method_names

#: (large model, small model, bench crop (H, W)) -> the method sections of the case's config;
#: the models are config dicts (``{"name": ..., "arch": {...}}``)
SectionsFn = Callable[[dict, dict, tuple[int, int]], dict[str, Any]]


def no_sections(large: dict, small: dict, crop: tuple[int, int]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class BenchCase:
    """One training case of ``duda bench``."""

    name: str  # the case's name (``--cases``, the report's rows)
    method: str  # the registered method it runs
    sections: SectionsFn = no_sections  # method sections of its config
    trains_small: bool = False  # ``model`` is the bench's small model (else the large one)
    crop_scale: int = 1  # training crop = crop_scale × the bench crop
    step: int = 1  # the step index the timed step runs as
    prepare: Callable[[Method, int], None] | None = None  # (method, classes): before the first step
    rank: int | None = None  # place in the default set of cases (None: only with --cases)
    # what it trains, for the report's "Cases:" line (cases with the same text are listed together)
    trains: str = ""
    label: str = ""  # its name in the report's sentences, e.g. "DUDA stage-1"
    short_label: str = ""  # ... in a shorter sentence (the reference case)
    reference: bool = False  # the one-network large-model step the other cases are compared with
    compare: bool = False  # a finding compares its step with the reference's
    target_ratio: float | None = None  # ... against this target (time ratio over the reference)
    loader_demand: bool = False  # the report lists the loader demand of its step


def multires_sections(large: dict, small: dict, crop: tuple[int, int]) -> dict[str, Any]:
    """``method.hrda``: a detail crop of the bench crop (the training crop is twice that)."""
    return {"hrda": {"hr_crop_size": list(crop)}}


def large_in(section: str, **settings: Any) -> SectionsFn:
    """Sections with the large model at ``method.SECTION.large`` (a distilling method's teacher
    side; ``model`` is then the small one) and ``settings`` beside it."""

    def sections(large: dict, small: dict, crop: tuple[int, int]) -> dict[str, Any]:
        return {section: {"large": large, **settings}}

    return sections


def default_cases(cls: type[Method]) -> tuple[BenchCase, ...]:
    """The case of a method that declares none: one step of it on the large model."""
    multires = "hrda" in cls.sections
    return (
        BenchCase(
            cls.name,
            cls.name,
            sections=multires_sections if multires else no_sections,
            crop_scale=2 if multires else 1,
        ),
    )


def cases_of(cls: type[Method]) -> tuple[BenchCase, ...]:
    """The bench cases class ``cls`` itself declares (``bench_cases``: a tuple or a class method;
    a subclass does not inherit them), else its default one."""
    if "bench_cases" not in vars(cls):
        return default_cases(cls)
    declared = cls.bench_cases
    return tuple(declared() if callable(declared) else declared)


def bench_cases() -> dict[str, BenchCase]:
    """Every training case of the registered methods, by name: single cases first (by method
    name), then the methods that split into several (e.g. DUDA's two stages)."""
    per_method = [cases_of(method_class(name)) for name in method_names()]
    ordered = [c for cases in per_method if len(cases) == 1 for c in cases]
    ordered += [c for cases in per_method if len(cases) > 1 for c in cases]
    return {c.name: c for c in ordered}


def bench_case(name: str) -> BenchCase:
    """The case ``name``; an unknown name is a KeyError listing the known ones."""
    cases = bench_cases()
    if name not in cases:
        raise KeyError(f"unknown bench case {name!r}; known: {', '.join(cases)}")
    return cases[name]


def default_case_names() -> tuple[str, ...]:
    """The cases ``duda bench`` runs without ``--cases``, in their declared order."""
    ranked = [c for c in bench_cases().values() if c.rank is not None]
    return tuple(c.name for c in sorted(ranked, key=lambda c: c.rank))


__all__ = [
    "BenchCase",
    "bench_case",
    "bench_cases",
    "cases_of",
    "default_case_names",
    "large_in",
    "multires_sections",
]
