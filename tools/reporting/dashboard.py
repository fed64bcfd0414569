"""Make a published asv dashboard work offline: serve its CDN libraries from html/vendor/.

asv 0.6.6's index.html loads jQuery, flot, bootstrap and three small plugins
from public CDNs; on a host without internet access the page stays blank.
``vendor(html_dir)`` copies the same libraries (third_party/asv_dashboard/, with
their sources) next to the page and points its tags at them.
"""

from __future__ import annotations

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
