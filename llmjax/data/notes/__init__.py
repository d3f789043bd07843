"""Part-of-speech "notes" corpora: spaCy tags woven into a GPT-2 token stream.

Every spaCy token that is not whitespace (a word or a punctuation mark) gets one
*note*: a single new token appended after the base vocabulary (ids 50257, 50258,
... for GPT-2) whose text is its tag in brackets, e.g. `[RB]`. The word keeps its
normal subword tokens. Four corpus variants:

  pre    [RB] Bright ly [VBG] jumping ...   the note comes before the word
  post   Bright ly [RB] jumping [VBG] ...   the note comes after the word
  blank  Bright ly [BLANK] jumping [BLANK]  a note slot that carries nothing
  none   Bright ly jumping ...              plain text

How much a note says is set by the tagging *scheme*: `blank`, `upos` (coarse
universal POS), `tag` (fine tag, default), `tag+morph` (fine tag and
morphological features, `[VBD|Tense=Past|VerbForm=Fin]`), `tag+morph+dep` (and
the dependency relation, `[...|dep=ROOT]`). A pipeline without a fine tagger
(e.g. cs_core_news_sm) gives universal POS for `tag`. Closed schemes (blank,
upos, tag) have a fixed, sorted inventory taken from the pipeline's labels, so
note ids are stable across texts; open schemes list what the text shows
(`merge_labels` shares one inventory across texts). `note_entropy` says how
many bits per word a scheme's notes carry.

Exactness: the text is cut into one *segment* per word, running from the end of
the previous word to the end of this one, so each word is BPE-encoded together
with the whitespace before it (the single space GPT-2 attaches to a word, and
any newlines or extra spaces, which stay separate tokens). The segments
partition the text, so removing the notes leaves the `none` stream, and
decoding that gives back the original text byte for byte. The `none` stream
equals `tokenizer.encode(text)` wherever spaCy's token boundaries are also
GPT-2 pre-tokenizer boundaries; where they are not (`do|n't` vs ` don|'t`,
`.|"` vs `."`) the word boundary wins, so every variant shares the same word
tokens. `plain_agreement` measures how often that happens.

In the `pre` variant the note sits right before the word's own tokens: detached
whitespace (e.g. the newlines before a paragraph's first word) comes before the
note.

Tagging a corpus is done once and cached under `$LLMJAX_CACHE/notes` (default
`~/.cache/llmjax/notes`), keyed by the text's sha256, the spaCy pipeline's name
and version, the scheme and the chunk size.

Modules: `pipelines` (spaCy pipelines, schemes), `tagging` (tag_text and its cache),
`weaving` (variant token streams), `tokenizer` (NotesTokenizer), `corpus` (corpora
on disk), `prepare` (a run's notes corpus, cached). Their public names are also
importable from `llmjax.data.notes` itself.
"""

from __future__ import annotations

from llmjax.data.notes.corpus import (
  CORPUS_FORMAT,
  read_corpus,
  split_word,
  write_corpus,
  write_streamed_corpus,
)
from llmjax.data.notes.notes_tokenizer import NotesTokenizer
from llmjax.data.notes.pipelines import (
  BLANK,
  DEFAULT_BATCH_SIZE,
  DEFAULT_MAX_CHARS,
  DEFAULT_MODEL,
  SCHEMES,
  UPOS,
  VARIANTS,
  install_hint,
  label_inventory,
  load_pipeline,
  model_id,
  needed_components,
  scheme_attrs,
)
from llmjax.data.notes.prepare import prepare_notes
from llmjax.data.notes.tagging import (
  TaggedText,
  WordRate,
  cache_dir,
  merge_labels,
  note_entropy,
  scheme_entropies,
  split_text,
  tag_text,
)
from llmjax.data.notes.weaving import (
  NotesStream,
  build,
  note_vocab,
  pieces,
  plain_agreement,
  strip_notes,
  tagging_scheme,
  weave,
)
from llmjax.util.errors import SpacyModelMissingError
