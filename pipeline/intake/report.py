"""What an import did, per file: added, duplicates (with the image already stored), rejected (with
the reason). Shared by image, video and ground-truth imports."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..store import ImageRecord


@dataclass(frozen=True)
class Duplicate:
    name: str            # the file that was not added
    image_id: int        # the image already in the store with the same bytes
    existing_name: str


@dataclass
class ImportReport:
    added: list[ImageRecord] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)   # (name, reason)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.duplicates)} duplicate(s), "
                f"{len(self.rejected)} rejected")
