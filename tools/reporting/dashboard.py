"""Finish a published asv dashboard: serve its CDN libraries from html/vendor/, and draw one machine.

asv 0.6.6's index.html loads jQuery, flot, bootstrap and three small plugins
from public CDNs; on a host without internet access the page stays blank.
``vendor(html_dir)`` copies the same libraries (third_party/asv_dashboard/, with
their sources) next to the page and points its tags at them.

asv's benchmark page draws every machine's series on one linear axis (a
2-core CPU's hundreds of milliseconds beside an H100's few), with the legend
inside the plot over the data; its benchmark list leaves a cell blank where
a benchmark has no value on the machine. ``one_machine_pages(html_dir,
machine)`` edits the published pages (``PAGE_EDITS``) so that a benchmark
page opens on one machine (the others stay a click away in its machine
list, and a URL naming machines is obeyed), the legend sits beside the plot,
and a missing value reads n/a.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "third_party" / "asv_dashboard"
CDN_FILES = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": "jquery.flot.time.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap.min.css",
}
# (file in html_dir, asv 0.6.6's text, its replacement); "{machine}", quotes included, becomes the default
# machine's name as a JS string literal.
PAGE_EDITS = (
    (  # a benchmark page, on first load or from a link without machines, opens on one machine
        "graphdisplay.js",
        """                    if (param == 'branch') {
                        state[param] = [values[0]];
                    }
                }
            });
""",
        """                    if (param == 'branch') {
                        state[param] = [values[0]];
                    }
                }
            });
            if (index.params.machine.indexOf("{machine}") >= 0) {
                state.machine = ["{machine}"];  // estimators: one machine by default (tools/reporting/dashboard.py)
            }
""",
    ),
    (  # the legend beside the plot, not over its data
        "graphdisplay.js",
        """                show: show_legend,
                position: "nw",""",
        """                show: show_legend,
                container: $("#estimators-legend"),""",
    ),
    (
        "index.html",
        """          <div style="position: absolute; top: 48px; left: 0; right: 0; bottom: 100px;">
            <div id="main-graph" style="min-height: 100px; width: 100%; height: 100%"></div>
          </div>""",
        """          <div style="position: absolute; top: 48px; left: 0; right: 260px; bottom: 100px;">
            <div id="main-graph" style="min-height: 100px; width: 100%; height: 100%"></div>
          </div>
          <div id="estimators-legend" style="position: absolute; top: 48px; right: 0; width: 250px; bottom: 100px;
               overflow-y: auto; font-size: 11px"></div>""",
    ),
    (  # the benchmark list: n/a where the machine has no value
        "summarylist.js",
        """            else {
                value_td.attr('data-sort-value', -1e99);
            }""",
        """            else {
                value_td.attr('data-sort-value', -1e99).text('n/a');
            }""",
    ),
)
_TAG_ATTRIBUTES = re.compile(r'\s+(?:integrity|crossorigin|referrerpolicy)="[^"]*"')


def vendor(html_dir: str | Path) -> None:
    """Copy the libraries to ``html_dir``/vendor and rewrite index.html's CDN references to them."""
    html_dir = Path(html_dir)
    index = html_dir / "index.html"
    page = index.read_text()
    missing = [url for url in CDN_FILES if url not in page]
    if missing:
        raise RuntimeError(f"{index} no longer references {missing}: update tools/reporting/dashboard.py for this asv")
    (html_dir / "vendor").mkdir(exist_ok=True)
    for url, name in CDN_FILES.items():
        shutil.copy(ASSETS / name, html_dir / "vendor" / name)
        # The tag's integrity hash names the CDN's minified file: drop it with the URL.
        page = re.sub(
            rf'<(script|link)([^>]*?)(src|href)="{re.escape(url)}"([^>]*)>',
            lambda m: _TAG_ATTRIBUTES.sub("", f'<{m[1]}{m[2]}{m[3]}="vendor/{name}"{m[4]}>'),
            page,
        )
    index.write_text(page)


def one_machine_pages(html_dir: str | Path, machine: str) -> None:
    """Apply ``PAGE_EDITS`` to the published pages (again: a no-op); RuntimeError, before writing anything,
    where this asv's pages differ from 0.6.6's."""
    html_dir = Path(html_dir)
    pages = {name: (html_dir / name).read_text() for name, _, _ in PAGE_EDITS}
    for name, old, new in PAGE_EDITS:  # every page checked before any is written
        new = new.replace('"{machine}"', json.dumps(machine))
        if new in pages[name]:
            continue  # edited by an earlier call
        if pages[name].count(old) != 1:
            raise RuntimeError(
                f"{name} no longer holds the text PAGE_EDITS replaces: update tools/reporting/dashboard.py"
            )
        pages[name] = pages[name].replace(old, new)
    for name, text in pages.items():
        (html_dir / name).write_text(text)
