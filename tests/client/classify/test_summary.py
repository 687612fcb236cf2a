"""The batch CLI's summary line counts in words a reader expects."""

from __future__ import annotations

from cnnserve.client.classify.job import Summary


def test_the_summary_line_says_image_for_one_and_images_otherwise() -> None:
    assert Summary(written=1, failed=0, wall_s=0.5).line().startswith("1 image, 0 failed, 0.50 s, 2.0 images/s")
    assert Summary(written=0, failed=0, wall_s=0.5).line().startswith("0 images, 0 failed")
    assert Summary(written=8, failed=3, wall_s=2.0).line().startswith("8 images, 3 failed, 2.00 s, 4.0 images/s")
