// The page's own script (no libraries): submit jobs with fetch, follow each with an EventSource.
"use strict";
const token = new URLSearchParams(location.search).get("access_token");
const TERMINAL = ["completed", "failed", "cancelled"];
const cards = new Map(); // job id -> <li>
const streams = new Map(); // job id -> EventSource
let oldest = null; // the last listed job id, for "Older jobs"

// With --api-key, the key arrives in the page's URL and goes along on every request (EventSource and
// <video src> cannot send headers).
function url(path) {
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
}

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url(path), options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

function render(job) {
  let card = cards.get(job.id);
  if (!card) {
    card = document.getElementById("job-template").content.firstElementChild.cloneNode(true);
    card.id = job.id;
    card.querySelector(".prompt").textContent = job.params.prompt;
    const p = job.params;
    card.querySelector(".meta").textContent =
      `${p.num_frames} frames, ${p.width}x${p.height}, ${p.steps} steps, guidance ${p.guidance_scale}, seed ${p.seed}`;
    card.querySelector(".cancel").onclick = () => call("POST", `/v1/videos/${job.id}/cancel`).then(render, showError(card));
    card.querySelector(".delete").onclick = () => call("DELETE", `/v1/videos/${job.id}`).then(() => forget(job.id), showError(card));
    cards.set(job.id, card);
  }
  card.dataset.status = job.status;
  card.querySelector(".status").textContent = job.status === "in_progress" ? `${job.progress}%` : job.status.replace("_", " ");
  card.querySelector("progress").value = job.progress;
  card.querySelector(".cancel").hidden = TERMINAL.includes(job.status);
  card.querySelector(".error").textContent = job.error ? job.error.message : "";
  if (job.status === "completed") {
    const video = card.querySelector("video");
    if (!video.getAttribute("src")) {
      video.src = url(`/v1/videos/${job.id}/content`);
      video.hidden = false;
      video.play().catch(() => {}); // autoplay may be refused; the controls remain
    }
    for (const [cls, variant] of [["download", "video"], ["download-gif", "gif"]]) {
      const link = card.querySelector("." + cls);
      link.href = url(`/v1/videos/${job.id}/content?variant=${variant}`);
      link.hidden = false;
    }
  }
  if (!TERMINAL.includes(job.status)) follow(job.id);
  return card;
}

// One event stream per unfinished job: a "progress" event per denoising step, then the final state.
function follow(id) {
  if (streams.has(id)) return;
  const stream = new EventSource(url(`/v1/videos/${id}/events`));
  streams.set(id, stream);
  const update = (event) => render(JSON.parse(event.data));
  stream.addEventListener("progress", update);
  for (const kind of TERMINAL) {
    stream.addEventListener(kind, (event) => { stop(id); update(event); });
  }
  stream.addEventListener("deleted", () => forget(id));
}

function stop(id) {
  const stream = streams.get(id);
  if (stream) stream.close();
  streams.delete(id);
}

function forget(id) {
  stop(id);
  const card = cards.get(id);
  if (card) card.remove();
  cards.delete(id);
}

function showError(card) {
  return (error) => { card.querySelector(".error").textContent = error.message; };
}

async function loadJobs() {
  const page = await call("GET", "/v1/videos?limit=20" + (oldest ? `&after=${oldest}` : ""));
  const list = document.getElementById("jobs");
  for (const job of page.data) list.append(render(job));
  if (page.data.length) oldest = page.data[page.data.length - 1].id;
  document.getElementById("more").hidden = !page.has_more;
}

async function loadModel() {
  const model = (await call("GET", "/v1/models")).data[0];
  const d = model.defaults;
  document.getElementById("model").textContent =
    `${model.id}: up to ${model.limits.max_frames} frames, ${model.limits.max_steps} steps, ${model.limits.max_pixels} pixels`;
  const form = document.getElementById("new-job");
  const placeholders = { num_frames: d.frames, width: d.width, height: d.height, steps: d.steps, guidance_scale: d.guidance };
  for (const [name, value] of Object.entries(placeholders)) form.elements[name].placeholder = value;
  for (const name of ["width", "height"]) form.elements[name].step = model.size_multiple;
  const select = form.elements.scheduler;
  for (const name of model.schedulers) select.add(new Option(name, name, false, name === model.scheduler));
}

document.getElementById("new-job").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = {};
  for (const element of form.elements) {
    if (!element.name || element.value === "") continue;
    body[element.name] = element.type === "number" ? Number(element.value) : element.value;
  }
  const error = document.getElementById("form-error");
  error.textContent = "";
  try {
    const job = await call("POST", "/v1/videos", body);
    document.getElementById("jobs").prepend(render(job));
  } catch (err) {
    error.textContent = err.message;
  }
});
document.getElementById("more").addEventListener("click", loadJobs);

loadModel().then(loadJobs).catch((err) => { document.getElementById("form-error").textContent = err.message; });
