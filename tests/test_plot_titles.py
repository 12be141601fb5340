"""Plot titles fit their figures at any panel count: measured on the rendered text."""

from __future__ import annotations

import io

import pytest

from dist_sqz.observe.plotting import fit_title, pyplot

LONG = (
    "Time to accuracy (emulated: N copies of this machine; links 1gbit, each worker padded "
    "to one core's measured forward, backward and optimizer times)"
)


@pytest.mark.parametrize("panels", [1, 2, 4])
def test_a_suptitle_and_panel_titles_fit(panels):
    plt = pyplot()
    fig, axes = plt.subplots(
        1, panels, figsize=(max(4.0 * panels, 6.0), 3.8), squeeze=False, layout="constrained"
    )
    titles = [fit_title(ax, f"Scaling efficiency\n({LONG})") for ax in axes[0]]
    sup = fit_title(fig, LONG)
    fig.savefig(io.BytesIO(), dpi=110)  # lays the figure out as a saved PNG is
    renderer = fig.canvas.get_renderer()
    width = fig.bbox.width
    box = sup.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= width, (box, width)
    assert ("\n" in sup.get_text()) == (panels < 4)  # wrapped only where it had to
    for t in titles:
        b = t.get_window_extent(renderer)
        assert 0 <= b.x0 and b.x1 <= width, (b, width)
    plt.close(fig)
