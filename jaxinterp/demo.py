"""The demo: contextual decomposition of MiniLM's sentence embedding over the words of a sentence.

For each word, CD-T (`jaxinterp.cd`, sources = that word's token positions at `embed`) splits the mean-pooled
sentence embedding into the word's contribution `rel` and the rest; the word's score is the share of the
embedding it explains, `<rel, e> / <e, e>`. All words are decomposed in one `jax.vmap` over source masks.
The attention of the last layer's [CLS] token is read with `jaxinterp.capture`.
"""

import html
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp

import jaxinterp as ji
import models

DEFAULT_TEXT = "The acting was wonderful, but the plot was painfully slow and predictable."


def word_spans(encoding) -> list[tuple[str, list[int]]]:
    """Group word-piece positions into words (special tokens dropped)."""
    words: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is not None:
            words.setdefault(word, []).append(position)
    return [(" ".join(encoding.tokens[p] for p in ps).replace(" ##", ""), ps) for ps in words.values()]


def word_scores(model, tokens, spans) -> jax.Array:
    """Each word's share of the sentence embedding, by CD-T. **Returns:** `[n_words]`."""
    seq = tokens.shape[0]
    masks = jnp.stack([ji.position_mask(ps, seq) for _, ps in spans])

    def share(m, mask):
        rel, irr = ji.cd(m, ji.Site("embed", mask))(tokens)
        total = (rel + irr).mean(0)
        return jnp.dot(rel.mean(0), total) / jnp.dot(total, total)

    return eqx.filter_jit(jax.vmap(share, in_axes=(None, 0)))(model, masks)


def colour(text: str, score: float, scale: float) -> str:
    """`text` on a terminal background from blue (negative) to red (positive)."""
    level = int(round(min(abs(score) / scale, 1.0) * 5))
    code = (196, 203, 210, 217, 224, 231)[5 - level] if score > 0 else (21, 27, 33, 39, 45, 231)[5 - level]
    return f"\033[48;5;{code}m\033[30m {text} \033[0m"


def write_html(path: pathlib.Path, spans, scores, scale: float) -> None:
    cells = []
    for (word, _), s in zip(spans, scores):
        alpha = min(abs(float(s)) / scale, 1.0)
        rgb = "220,40,40" if s > 0 else "40,80,220"
        cells.append(
            f'<span title="{float(s):+.3f}" style="background:rgba({rgb},{alpha:.2f});padding:2px 4px;'
            f'margin:1px;border-radius:3px">{html.escape(word)}</span>'
        )
    path.write_text(
        "<html><body style='font-family:sans-serif;font-size:20px'><h3>CD-T word contributions to the MiniLM "
        f"sentence embedding</h3><p>{''.join(cells)}</p></body></html>"
    )


def main(args=None) -> dict:
    """Run the demo on `args.text` (default sentence) and write `args.html` (default `results/demo.html`).

    **Returns:** `{"words": [...], "scores": [...]}`.
    """
    text = getattr(args, "text", None) or DEFAULT_TEXT
    html_path = pathlib.Path(getattr(args, "html", None) or "results/demo.html")
    model, tokenizer = models.load("minilm-l6")
    encoding = tokenizer.encode(text)
    tokens = jnp.asarray(encoding.ids)
    spans = word_spans(encoding)
    scores = word_scores(model, tokens, spans)
    scale = float(jnp.max(jnp.abs(scores)))
    print(f"Sentence: {text}\n\nCD-T share of the sentence embedding explained by each word (red +, blue -):\n")
    print(" ".join(colour(w, float(s), scale) for (w, _), s in zip(spans, scores)))
    print()
    for (word, _), s in sorted(zip(spans, scores), key=lambda x: -float(x[1]))[:5]:
        print(f"  {word:>15s}  {float(s):+.3f}")
    _, cache = ji.capture(model, "blocks.5.attn.pattern")(tokens)
    cls_attention = cache["blocks.5.attn.pattern"][:, 0, :].mean(0)
    top = jnp.argsort(-cls_attention)[:5]
    print("\nLast layer: tokens [CLS] attends to most (mean over heads):")
    print("  " + ", ".join(f"{encoding.tokens[int(i)]} {float(cls_attention[i]):.2f}" for i in top))
    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_html(html_path, spans, scores, scale)
    print(f"\nWrote {html_path}")
    return {"words": [w for w, _ in spans], "scores": [float(s) for s in scores]}
