# kwchromium: Debian's chromium, headless, for the pages kneewrap writes: the DOM after
# rendering, a screenshot, and the page printed to PDF. Nothing is fetched from a network.
import os
import re
import shutil
import subprocess
import tempfile

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run']


def _run(args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith('DBUS_')}
    with tempfile.TemporaryDirectory(prefix='kw-chromium-') as profile:
        p = subprocess.run([CHROMIUM, *FLAGS, f'--user-data-dir={profile}', *args],
                           capture_output=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr.decode(errors='replace')[-2000:]
    return p.stdout


def dump_dom(path):
    """The DOM as chromium built it from the file, serialised."""
    return _run(['--dump-dom', f'file://{os.path.abspath(path)}']).decode()


def screenshot(path, png, width=1000, height=2400):
    _run([f'--screenshot={png}', f'--window-size={width},{height}', '--hide-scrollbars',
          f'file://{os.path.abspath(path)}'])
    with open(png, 'rb') as f:
        head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')


def print_pdf(path, pdf):
    """Prints the page as chromium would on paper; returns each page's MediaBox size in points."""
    _run(['--no-pdf-header-footer', f'--print-to-pdf={pdf}', f'file://{os.path.abspath(path)}'])
    with open(pdf, 'rb') as f:
        data = f.read()
    return [(float(w), float(h)) for w, h in
            re.findall(rb'/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]', data)]
