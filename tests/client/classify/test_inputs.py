"""INPUT arguments expanded into image paths: folders, patterns, @lists (cnnserve.client.classify.inputs)."""

from __future__ import annotations

from pathlib import Path

from cnnserve.client.classify.inputs import expand


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_walked_recursively_in_sorted_order_keeping_only_images(tmp_path: Path) -> None:
    b2, a1, a_deep = (
        touch(tmp_path / "b" / "2.png"),
        touch(tmp_path / "a" / "1.JPG"),
        touch(tmp_path / "a" / "z" / "0.png"),
    )
    touch(tmp_path / "a" / "notes.txt")
    touch(tmp_path / ".hidden" / "3.png")
    notes = tmp_path / "a" / "notes.txt"
    missing = tmp_path / "missing.png"
    listed = tmp_path / "list.txt"
    listed.write_text(f"# a comment\n\n{b2}\n{tmp_path}/a/*.JPG\n")
    got = list(expand([str(tmp_path / "a"), str(tmp_path / "b"), str(notes), str(missing), f"@{listed}"]))
    # a folder: images only, sorted, depth first; a named file is taken as it is; a missing one passes through
    # (the job reports it); an @list is expanded line by line, patterns included.
    assert got == [str(a1), str(a_deep), str(b2), str(notes), str(missing), str(b2), str(a1)]
    assert list(expand([f"{tmp_path}/**/*.png"])) == [str(a_deep), str(b2)]
