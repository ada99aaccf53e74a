"""Render a clemalign report.html in headless Chromium; check that every image loads and
that the summary and the how-to-open section are visible on opening (above the fold).

A wrapper page loads the report in an iframe and, once loaded, writes for every <img> its
natural size into the DOM, which ``--dump-dom`` prints; the script also saves a full-page
screenshot next to the report (``report_screenshot.png``).  Needs Chromium
(``apt-get install chromium``); not part of the test suite.

Run:  python benchmarks/check_report.py clemalign-demo/report.html
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]

FOLD_PX = 800  # a laptop browser window's visible height
ABOVE_THE_FOLD = ("Summary", "How to open these results")  # headings visible on opening

WRAPPER = """<!DOCTYPE html><html><body><iframe id="r" src="{src}" width="1200" height="800">
</iframe><pre id="out">pending</pre><script>
document.getElementById('r').onload = function () {{
  var imgs = this.contentDocument.images, lines = [];
  for (var i = 0; i < imgs.length; i++) {{
    lines.push('IMG ' + imgs[i].alt + ' ' + imgs[i].complete + ' ' + imgs[i].naturalWidth
               + 'x' + imgs[i].naturalHeight);
  }}
  var heads = this.contentDocument.getElementsByTagName('h2');
  for (var i = 0; i < heads.length; i++) {{
    lines.push('H2 ' + Math.round(heads[i].getBoundingClientRect().top) + ' '
               + heads[i].textContent);
  }}
  lines.push('TITLE ' + this.contentDocument.title);
  document.getElementById('out').textContent = lines.join('\\n');
}};
</script></body></html>"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found (apt-get install chromium)")
        return 2
    report = args.report.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "wrapper.html"
        wrapper.write_text(WRAPPER.format(src=report.as_uri()))
        dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile",
                              "--virtual-time-budget=10000", "--dump-dom", wrapper.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        shot = report.with_name("report_screenshot.png")
        subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile2",
                        f"--screenshot={shot}", "--window-size=1200,4000", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
        fold = report.with_name("report_above_the_fold.png")
        subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile3",
                        f"--screenshot={fold}", f"--window-size=1200,{FOLD_PX}", report.as_uri()],
                       capture_output=True, text=True, timeout=120)
    images = re.findall(r"IMG (.*?) (true|false) (\d+)x(\d+)", dom)
    bad = [name for name, complete, w, h in images if complete != "true" or int(w) == 0]
    for name, complete, w, h in images:
        print(f"{name:>20}: loaded={complete} {w}×{h}")
    heads = {text: int(top) for top, text in re.findall(r"H2 (-?\d+) (.*)", dom)}
    hidden = [h for h in ABOVE_THE_FOLD if not 0 <= heads.get(h, FOLD_PX) < FOLD_PX - 60]
    for text, top in heads.items():
        print(f"  h2 at {top:5d} px: {text}")
    print(f"{len(images)} images, {len(bad)} not loaded; above the fold ({FOLD_PX} px): "
          f"{'all of ' if not hidden else 'missing '}{hidden or list(ABOVE_THE_FOLD)}; "
          f"screenshots {shot}, {fold}")
    return 1 if bad or not images or hidden else 0


if __name__ == "__main__":
    sys.exit(main())
