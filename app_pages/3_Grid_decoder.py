"""Grid decoder: decode any location of the map, not only the codes of real images.

Everything under the sidebar's choices is one fragment (`explore`): a grid control, a click on a
map or on the live view reruns that part only, not the pair picker and the map lookup (the sidebar's
widgets rerun the whole page). Pictures reach the browser as data URLs encoded once (ui/images.py)."""
from __future__ import annotations

import streamlit as st

from ui import images, lesson, live_decode, maps, scores, state
from ui.style import MODEL_LABELS
from vae.errors import LatentExplorerError
from vae.neighbours import nearest
from vae.lesson import claims, default_view

st.set_page_config(page_title="Grid decoder · Latent Explorer", page_icon="🧭", layout="wide")
pair = state.pair_picker()

st.title("Grid decoder")
st.markdown(
    """
The decoder accepts **any** code, not only the codes of real images. Here a grid of codes laid
over the map is decoded, and you can **click anywhere on a map**, including the empty space
between the coloured groups, to see what that code turns into. Two reference classifiers (the
*judges*) look at every decoded cell: what they find on the pair you picked is written under
the maps, in the box that starts with **What this pair shows**.
"""
)
if pair is None:
    st.stop()

CLICK, SEEN = "grid_click", "grid_seen_clicks"  # the clicked location; the last click read per map
HOLES = "grid_hole_map"  # the hole-map toggle


def grid_controls(lmap, method: str, judge) -> tuple[maps.GridSpec, bool, bool]:
    """The grid the visitor chose: (its spec, decoded tiles under the dots, hole map on)."""
    can_gauss = method == "identity" and "vae" in lmap.kinds
    opening = default_view(lmap.latent_dim)
    c = st.columns([1, 1, 1.2, 1.2, 1.4])
    n = c[0].slider("Grid cells per side", 5, 30, 15, help="n × n codes are decoded per model (a few ms each).")
    zoom = c[1].slider("Range (× the data's extent)", 0.5, 3.0, 1.0, 0.25,
                       help="Zoom out to see what the decoders make of codes far from any data.")
    gaussian = c[2].toggle(
        "Equal prior mass per cell", value=opening.gaussian and not lmap.aligned, disabled=not can_gauss,
        key=f"grid_gaussian_{lmap.aligned}",
        help="For a 2-D pair: grid nodes at the N(0, 1) quantiles, dense near z = 0 where the prior puts its codes "
             "(the classic VAE manifold picture); in each model's own coordinates the AE gets the very same codes, "
             "so you see what 'sample from the prior' gives each model.") and can_gauss
    tiles_under = c[3].toggle("Decoded images under the dots", value=True, disabled=gaussian,
                              help="Paint each grid cell with what its centre decodes to.") and not gaussian
    if judge is None:
        c[4].caption(f"No reference classifier for {pair.dataset}, so no hole map.")
    holes = judge is not None and c[4].toggle(
        "Hole map: shade cells the classifier does not recognise", value=True, key=HOLES,
        help=f"The reference classifier ({judge.name if judge else ''}) looks at each cell's decoded image; "
             f"cells it names with less than {maps.CONFIDENT:.0%} confidence are tinted red.")
    xlim, ylim = maps.zoomed_limits(lmap, zoom)
    return maps.GridSpec(n, xlim, ylim, gaussian), tiles_under, holes


def read_click(lmap, canvas: maps.MapCanvas) -> None:
    """A new click on either map (the component's value is in session state before it is drawn)."""
    seen = st.session_state.setdefault(SEEN, {})
    fresh = []
    for kind in lmap.kinds:
        value = st.session_state.get(f"grid_map_{kind}")
        if value and value.get("unix_time") != seen.get(kind):
            seen[kind] = value.get("unix_time")
            fresh.append((value.get("unix_time") or 0, kind, value))
    if fresh:
        _, kind, value = max(fresh, key=lambda f: f[0])
        point = maps.click_to_data(value, canvas)
        if point is not None:
            st.session_state[CLICK] = {"map": lmap.key, "kind": kind, "point": point}


def clickable_maps(lmap, spec, canvas, draw_map, image_keys: dict, tiles_under: bool, click, confidence: dict) -> None:
    """Both maps side by side, the click's crosshair on them, and each one's recognised share.
    draw_map(kind) draws a map; it is called only when its encoded picture is not cached yet."""
    show_prior = lmap.prior_center() is not None
    fmt = images.PHOTO if tiles_under else images.DRAWING
    for col, kind in zip(st.columns(len(lmap.kinds)), lmap.kinds):
        with col:
            st.markdown(f"**{MODEL_LABELS[kind]}**" + (" — dashed: the prior's 2σ circle" if kind == "vae" and
                                                             show_prior else ""))
            if click:
                image = images.encoded(f"{image_keys[kind]}|click|{click['point']}",
                                       lambda k=kind: maps.draw_click_marker(draw_map(k), canvas, click["point"]), fmt)
            else:
                image = images.encoded(image_keys[kind], lambda k=kind: draw_map(k), fmt)
            maps.clickable_map(image, key=f"grid_map_{kind}")
            if confidence:
                share = maps.recognised_share(confidence[kind])
                st.metric(f"{MODEL_LABELS[kind]}: cells the classifier recognises (≥ {maps.CONFIDENT:.0%} sure)",
                          f"{share:.0%}", help=f"{round(share * spec.n * spec.n)} of the {spec.n}×{spec.n} grid cells"
                          + (" (equal prior mass each)." if spec.gaussian else " within the view."))


def hole_legend(judge, judge_mtime: int, tiles_under: bool, gaussian: bool) -> None:
    """What the red means, beside the legend of the tint."""
    noun = maps.HOLE_NOUNS.get(judge.stem.removeprefix("classifier-"), "picture of one of the classes")
    accuracy = scores.load_judge(str(judge), judge_mtime).test_accuracy
    legend, why = st.columns([1, 2.2])
    legend.image(images.data_url(f"hole_legend|{tiles_under}", lambda: maps.hole_legend(on_tiles=tiles_under)),
                 caption="Hole map: the classifier's confidence")
    why.markdown(
        f"**Red cells: the decoder's output there is not a recognisable {noun} — a hole.** "
        f"A reference classifier{f' (right on {accuracy:.1%} of real test images)' if accuracy else ''} looks "
        f"at each cell's decoded image; the shares count the cells it names with at least {maps.CONFIDENT:.0%} "
        + ("confidence. Every cell holds the same prior mass, so for the VAE the share is about the chance that a "
           "random code z ~ N(0, I) decodes to something recognisable."
           if gaussian else "confidence, within the view: zoom out to see where each decoder stops making them."))


def what_this_pair_shows(lmap, method: str, spec, judged: list, tiles: dict) -> None:
    """The judges' verdicts on the grid above and on prior samples, said in words and drawn."""
    grid_id = f"{lmap.key}|{spec.n}|{spec.xlim}|{spec.ylim}|{spec.gaussian}"
    verdicts = {str(p): {kind: lesson.grid_verdicts(grid_id, kind, str(p), mtime, tiles[kind]) for kind in lmap.kinds}
                for p, mtime, _ in judged}
    named = {judge.name: v for (_, _, judge), v in zip(judged, verdicts.values())}
    grid_lesson = {name: {k: {"grid_recognised": v.recognised, "grid_entropy": v.entropy} for k, v in by_kind.items()}
                   for name, by_kind in named.items()}
    if len(lmap.kinds) != 2 or not named:
        return
    prior = lesson.prior_lesson(pair)
    said = claims(grid_lesson) | claims(prior)
    word, words = lesson.noun(pair), lesson.noun(pair, plural=True)
    found = []
    if said.get("holes"):
        found.append(f"**Holes.** On this grid the VAE's cells are recognisable {words} far more often than the "
                     f"AE's ({lesson.figures_line(grid_lesson, 'grid_recognised')}): between and around its groups "
                     f"the AE decodes smeared blends that are no {word}. Shaded red on the maps.")
    if said.get("even_grid"):
        found.append(f"**Who owns the map.** The judges name many more different {words} on the VAE's grid than on "
                     f"the AE's: class entropy {lesson.figures_line(grid_lesson, 'grid_entropy', '.2f')} nats "
                     f"(ln {len(lmap.classes)} = {lesson.even_nats(len(lmap.classes)):.2f} is perfectly even). "
                     "The territory maps below colour each cell by the class it decodes to.")
    if said.get("prior_holes"):
        found.append(f"**Prior samples.** Codes drawn from N(0, I) decode to recognisable {words} for the VAE and "
                     f"mostly not for the AE ({lesson.figures_line(prior, 'prior_recognised')} of 2,000 samples).")
    elif said.get("even_prior"):
        sentence = lesson.prior_classes_sentence(pair, prior, said)
        found.append(f"**Prior samples.** Of 2,000 codes drawn from N(0, I): {sentence}.")
    if not said.get("holes"):
        found.append(f"**No holes to see on this grid:** the AE's decoder draws recognisable {words} about as often "
                     f"as the VAE's ({lesson.figures_line(grid_lesson, 'grid_recognised')})."
                     + (" In 2-D that is the rule, not an accident: see the model card." if lmap.latent_dim == 2 else
                        ""))
    st.info("**What this pair shows**, on the grid above, judged by "
            + " and by ".join(f"a {name}" for name in named) + ":\n\n" + "\n\n".join(found))
    who_owns_the_map(lmap, method, spec, grid_id, verdicts, judged[0], said, bool(prior), word)


def who_owns_the_map(lmap, method: str, spec, grid_id: str, verdicts: dict, first_judge: tuple, said: dict,
                     has_prior: bool, word: str) -> None:
    """Territory maps (each cell in the colour of its class) and the class shares, AE beside VAE."""
    st.subheader("Who owns the map")
    st.caption(f"Each cell of the grid above, coloured by the {word} the first judge ({first_judge[2].name}) names for "
               f"its decoded image; grey: no class with at least {maps.CONFIDENT:.0%} confidence. Top row = largest y."
               + ("" if said.get("even_grid") else " On this grid the class shares do not separate the two models "
                  "(the bars count every cell, grey ones by their likeliest class): "
                  + ("its lesson is the holes above." if said.get("holes") else "see the box above.")))
    first_path, first = next(iter(verdicts.items()))
    classes = tuple(lmap.classes)
    for col, kind in zip(st.columns(len(lmap.kinds)), lmap.kinds):
        key = f"{grid_id}|{kind}|{first_path}"
        col.image(images.data_url(f"territory|{key}", lambda k=kind: lesson.territory_image(first[k], spec.n, classes)),
                  caption=f"{MODEL_LABELS[kind]}: territory map", width=360)
    bars = st.columns(2)
    bars[0].plotly_chart(lesson.shares_figure(f"grid|{grid_id}|{first_path}", first, classes,
                                              f"Cells of this grid per {word}"),
                         key="grid_shares_chart", config={"displaylogo": False})
    if has_prior:
        prior_v = lesson.prior_verdicts(pair, first_judge[0])
        bars[1].plotly_chart(lesson.shares_figure(f"prior|{lmap.key}|{first_path}", prior_v, classes,
                                                  f"2,000 prior samples per {word}"),
                             key="prior_shares_chart", config={"displaylogo": False})
    if not lmap.aligned and method == "identity":
        spread = {k: lmap.codes[k].mean.std(axis=0) for k in lmap.kinds}
        st.caption("Own coordinates: the codes' spread per axis is "
                   + ", ".join(f"{MODEL_LABELS[k]} {s[0]:.2g} × {s[1]:.2g}" for k, s in spread.items())
                   + " (the prior's is 1 × 1). Nothing ties the AE's codes to the prior, so N(0, I) covers only the "
                     "middle of its map, and whichever classes happen to sit there own its prior samples.")


def clicked_location(lmap, models: dict, data, spec, judged: list, click) -> None:
    """The clicked place decoded by each model, the judges' word on it, and the nearest real images."""
    st.subheader("The clicked location, decoded")
    if click is None:
        st.caption("Click anywhere on a map above. Try the white space between groups on the AE's map.")
        return
    x, y = click["point"]
    word = lesson.noun(pair)
    st.markdown(f"You clicked the **{MODEL_LABELS[click['kind']]}** map at ({x:.3g}, {y:.3g}); "
                "here is that location decoded by each model, with the real test images nearest to it on that "
                "model's map.")
    for col, kind in zip(st.columns(len(lmap.kinds)), lmap.kinds):
        with col:
            decoded = maps.decoded_point(lmap.key, kind, click["point"], lmap, models[kind].model)
            dists, near = nearest(lmap.points[kind], [click["point"]], k=5)
            dist, near = float(dists[0, 0]), near[0]
            mark = " (clicked)" if kind == click["kind"] else " (same place)"
            st.image(images.thumbnail_url(f"click|{lmap.key}|{kind}|{click['point']}",
                                          lambda d=decoded: maps.enlarge(d, 224)),
                     width=224, caption=f"{MODEL_LABELS[kind]}{mark}: decoded")
            lines = []
            for p, mtime, judge in judged:
                v = lesson.grid_verdicts(f"click|{lmap.key}|{click['point']}", kind, str(p), mtime, decoded[None])
                label = lmap.classes[v.predicted[0]] if v.predicted[0] < len(lmap.classes) else str(v.predicted[0])
                lines.append(f"{judge.name.split(' (')[0]} judge: "
                             + (f"a {label} ({v.confidence[0]:.0%} sure)" if v.recognised else
                                f"no {word} it is {maps.CONFIDENT:.0%} sure of (best guess {label}, "
                                f"{v.confidence[0]:.0%}): a hole"))
            if lines:
                st.caption("  \n".join(lines))
            rows = lmap.indices[near]
            st.image([images.thumbnail_url(f"test|{data.name}|{r}", lambda r=r: maps.enlarge(
                         maps.split_images(data.test, [r])[0], 56)) for r in rows],
                     width=56, caption=[lmap.classes[lmap.labels[r]] for r in near])
            st.caption(f"Nearest real images on the {MODEL_LABELS[kind]} map; the closest is {dist:.2g} "
                       f"map units away ({dist / (spec.xlim[1] - spec.xlim[0]):.0%} of the view's width).")


def decoded_grids(lmap, spec, tiles: dict, hole_key: str, shade: dict, method: str) -> None:
    """The whole grid as one picture per model, with a download of each."""
    n, (xlim, ylim) = spec.n, (spec.xlim, spec.ylim)
    st.subheader("The decoded grid")
    st.caption(("Nodes at the prior's quantiles: every cell holds the same prior probability. " if spec.gaussian else
                f"Each tile is the decoding of its cell's centre; the grid covers the maps above "
                f"(x ∈ [{xlim[0]:.3g}, {xlim[1]:.3g}], y ∈ [{ylim[0]:.3g}, {ylim[1]:.3g}]). ") +
               "Top row = largest y, as on the maps."
               + (" Red: the hole map (the downloads are untinted)." if shade else ""))
    for col, kind in zip(st.columns(len(lmap.kinds)), lmap.kinds):
        png = maps.decoded_grid_png(lmap.key, kind, n, xlim, ylim, spec.gaussian, tiles[kind])
        key = f"grid|{lmap.key}|{kind}|{n}|{xlim}|{ylim}|{spec.gaussian}|{hole_key if shade else ''}"
        shown = images.data_url(key, lambda k=kind, plain=png: maps.decoded_grid_png(
            lmap.key, k, n, xlim, ylim, spec.gaussian, tiles[k], hole_key, shade[k]) if shade else plain, images.PHOTO)
        col.image(shown, caption=f"{MODEL_LABELS[kind]}: {n}×{n} decoded grid", width="stretch")
        col.download_button(f"Download the {MODEL_LABELS[kind]} grid (PNG)", png,
                            file_name=f"grid-{pair.name}-{kind}-{method}-{n}x{n}.png", mime="image/png",
                            key=f"grid_png_{kind}")


@st.fragment
def explore(models: dict, page: maps.PageMap, judge, judged: list) -> None:
    """The grid, both clickable maps, what the judges see, the live view, the click and the grids."""
    data, method, lmap = page.data, page.method, page.lmap
    spec, tiles_under, holes = grid_controls(lmap, method, judge)
    xlim, ylim, n, gaussian = spec.xlim, spec.ylim, spec.n, spec.gaussian
    show_prior = lmap.prior_center() is not None
    st.info("**How a location becomes a code.** " + lmap.inverse_note())

    tiles = {kind: maps.decoded_grid(lmap.key, kind, n, xlim, ylim, gaussian, lmap, models[kind].model)
             for kind in lmap.kinds}
    # the hole map: kind -> the classifier's confidence per cell [n*n] (the tiles' order), and its tint
    confidence, hole_key, shade = {}, "", {}
    if holes:
        judge_mtime = judge.stat().st_mtime_ns
        try:
            confidence = {kind: maps.grid_confidence(lmap.key, kind, n, xlim, ylim, gaussian, str(judge), judge_mtime,
                                                     tiles[kind]) for kind in lmap.kinds}
            hole_key = f"{judge}|{judge_mtime}|{maps.CONFIDENT}"
            shade = {kind: maps.hole_shade(confidence[kind]) for kind in lmap.kinds}
        except LatentExplorerError as err:
            st.warning(state.public(f"No hole map: {err}"))
    canvas = maps.MapCanvas(xlim, ylim)

    def draw_map(kind: str):
        return maps.map_image(lmap.key, kind, n, xlim, ylim, gaussian, tiles_under, show_prior, lmap, tiles[kind],
                              hole_key, shade.get(kind))

    image_keys = {kind: f"map|{lmap.key}|{kind}|{n}|{xlim}|{ylim}|{gaussian}|{tiles_under}|{show_prior}|{hole_key}"
                  for kind in lmap.kinds}

    read_click(lmap, canvas)
    if "ae" in lmap.kinds and st.button("Take me to the emptiest spot on the AE's map",
                                        help="The location among the AE's codes that is farthest from every one of "
                                             "them."):
        st.session_state[CLICK] = {"map": lmap.key, "kind": "ae",
                                   "point": maps.largest_gap(lmap.points["ae"], xlim, ylim)}
    click = st.session_state.get(CLICK)
    click = click if click and click["map"] == lmap.key else None

    clickable_maps(lmap, spec, canvas, draw_map, image_keys, tiles_under, click, confidence)
    if confidence:
        hole_legend(judge, judge.stat().st_mtime_ns, tiles_under, gaussian)
    if not show_prior and "vae" in lmap.kinds:
        st.caption("The prior N(0, I) cannot be drawn on a UMAP or t-SNE map (they bend space); use PCA or a 2-D "
                   "pair.")
    what_this_pair_shows(lmap, method, spec, judged, tiles)
    live_decode.section(models, lmap, click_key=CLICK)  # glide to decode: the decoders run in the browser
    clicked_location(lmap, models, data, spec, judged, click)
    decoded_grids(lmap, spec, tiles, hole_key, shade, method)


models = state.pair_models_or_stop(pair)
page = maps.page_map(pair, models)
judged = [(p, mtime, scores.load_judge(str(p), mtime))  # every judge: the primary CNN first
          for p, mtime in ((p, p.stat().st_mtime_ns) for p in lesson.judge_paths(pair))]
explore(models, page, scores.find_judge(pair), judged)
