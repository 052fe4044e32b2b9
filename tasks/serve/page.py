"""The upload page at ``GET /``: one self-contained HTML document (no CDN, no build step)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vigil — is this image synthetic?</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --fake: #d92d20; --real: #079455; --accent: #3b5bdb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f7f8fa; }
  main { max-width: 640px; margin: 3rem auto; padding: 0 1rem; }
  h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
  p.lead { color: var(--muted); margin: 0 0 1.5rem; }
  form, #result { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 1.25rem; }
  .row { display: flex; gap: .75rem; align-items: center; flex-wrap: wrap; }
  label.check { color: var(--muted); font-size: .95rem; }
  button { background: var(--accent); color: #fff; border: 0; border-radius: 8px; padding: .55rem 1.1rem; font-size: 1rem; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  #preview { max-width: 100%; max-height: 260px; border-radius: 8px; margin-top: 1rem; display: none; }
  #result { margin-top: 1rem; display: none; }
  #verdict { font-size: 1.4rem; font-weight: 650; }
  #verdict.synthetic { color: var(--fake); } #verdict.authentic { color: var(--real); } #verdict.error { color: var(--fake); }
  .bar { position: relative; height: 14px; background: #eef0f3; border-radius: 7px; margin: .75rem 0 .25rem; overflow: visible; }
  .fill { height: 100%; border-radius: 7px; background: linear-gradient(90deg, var(--real), var(--fake)); width: 0; transition: width .3s; }
  .mark { position: absolute; top: -5px; width: 2px; height: 24px; background: var(--fg); }
  .legend { display: flex; justify-content: space-between; color: var(--muted); font-size: .85rem; }
  #explanation { margin: .75rem 0 0; padding: .6rem .8rem; background: #f2f4f7; border-radius: 8px; display: none; }
  footer { color: var(--muted); font-size: .85rem; margin-top: 1rem; }
</style>
</head>
<body>
<main>
  <h1>Vigil</h1>
  <p class="lead">Is this image manipulated or synthesized? Upload one to ask the current detector.</p>
  <form id="form">
    <div class="row">
      <input id="file" name="file" type="file" accept="image/*" required>
      <label class="check"><input id="explain" type="checkbox"> explain</label>
      <button id="submit" type="submit">Check image</button>
    </div>
    <img id="preview" alt="the uploaded image">
  </form>
  <section id="result" aria-live="polite">
    <div id="verdict"></div>
    <div class="bar"><div class="fill" id="fill"></div><div class="mark" id="mark" title="threshold"></div></div>
    <div class="legend"><span id="score"></span><span id="threshold"></span></div>
    <p id="explanation"></p>
    <footer id="model"></footer>
  </section>
  <footer>API: <a href="/docs">/docs</a> · <a href="/metrics">/metrics</a></footer>
</main>
<script>
const $ = (id) => document.getElementById(id);
$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) { $("preview").src = URL.createObjectURL(file); $("preview").style.display = "block"; }
});
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  $("submit").disabled = true;
  $("verdict").className = ""; $("verdict").textContent = "Checking…";
  $("result").style.display = "block"; $("explanation").style.display = "none";
  try {
    const response = await fetch("/v1/detect?explain=" + $("explain").checked, { method: "POST", body });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.message || answer.error || response.statusText);
    $("verdict").className = answer.label;
    $("verdict").textContent = answer.label === "synthetic" ? "Likely synthetic or manipulated" : "Likely authentic";
    $("fill").style.width = (answer.p_fake * 100).toFixed(1) + "%";
    $("mark").style.left = (answer.threshold * 100).toFixed(1) + "%";
    $("score").textContent = "P(fake) " + answer.p_fake.toFixed(3);
    $("threshold").textContent = "threshold " + answer.threshold.toFixed(3);
    if (answer.explanation) { $("explanation").textContent = answer.explanation; $("explanation").style.display = "block"; }
    $("model").textContent = "model " + answer.model.name + " version " + (answer.model.version ?? "local") +
      " · " + answer.latency_ms.toFixed(0) + " ms";
  } catch (error) {
    $("verdict").className = "error"; $("verdict").textContent = "Error: " + error.message;
    $("fill").style.width = "0"; $("score").textContent = ""; $("threshold").textContent = ""; $("model").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
});
</script>
</body>
</html>
"""
