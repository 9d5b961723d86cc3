"use strict";
// The dashboard's live part is fetched again every few seconds and swapped in whole: the server
// renders it (one template, escaped there), this script only moves it. Nothing is fetched while
// the tab is hidden.
const LIVE_SECONDS = 2;

function swapLive() {
  if (document.hidden) {
    return Promise.resolve();
  }
  return fetch(location.pathname + location.search, { cache: "no-store" })
    .then((response) => (response.ok ? response.text() : null))
    .then((html) => {
      if (html === null) {
        return;
      }
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
      const current = document.getElementById("live");
      if (fresh && current) {
        current.replaceWith(document.adoptNode(fresh));
      }
    })
    .catch(() => {}); // the daemon restarting: the next round tries again
}

function keepLive() {
  setTimeout(() => swapLive().then(keepLive), LIVE_SECONDS * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.getElementById("live")) {
    keepLive();
  }
});

// -- sending photos: each file chosen or dropped is posted on its own to /api/v1/photos, with
// the preset picked when it was added, its bar filled by the upload's progress; then its job is
// followed until painted. The session's CSRF value goes in a header, as the API asks of a page.
const JOB_SECONDS = 2;
const FINAL = ["done", "failed", "quarantined"];

function said(item, text, kind) {
  item.className = kind || "";
  item.querySelector(".said").textContent = text;
}

function follow(item, job) {
  fetch(job.links.self, { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
    .then((now) => {
      if (now.state === "done") {
        said(item, "painted", "done");
        const link = document.createElement("a");
        link.href = now.links.page;
        const thumb = document.createElement("img");
        thumb.src = `/thumbs/${now.id}/result.jpg`;
        thumb.alt = `${now.name}, painted`;
        link.append(thumb, " see it");
        item.append(link);
      } else if (FINAL.includes(now.state)) {
        said(item, `${now.state}: ${now.error || ""}`, "bad");
      } else {
        const progress = now.progress;
        const stage = progress && progress.stages > 1 ? `stage ${progress.stage} of ${progress.stages}, ` : "";
        const step = progress ? ` (${stage}${progress.evaluation} of at most ${progress.budget})` : "";
        said(item, `${now.state}${step}, job ${now.id}`);
        setTimeout(() => follow(item, now), JOB_SECONDS * 1000);
      }
    })
    .catch(() => setTimeout(() => follow(item, job), JOB_SECONDS * 1000 * 2));
}

function send(form, file, preset) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = `${file.name} → ${preset}`;
  const bar = document.createElement("progress");
  bar.max = file.size || 1;
  bar.value = 0;
  const text = document.createElement("span");
  text.className = "said";
  item.append(name, bar, text);
  document.getElementById("upload-list").prepend(item);
  if (file.size > Number(form.dataset.maxBytes)) {
    bar.remove();
    said(item, "too large for web.max_upload_mb", "bad");
    return;
  }
  said(item, "sending");
  const body = new FormData();
  body.append("preset", preset);
  body.append("file", file, file.name);
  const request = new XMLHttpRequest(); // fetch() reports no upload progress
  request.open("POST", "/api/v1/photos");
  request.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
  request.upload.addEventListener("progress", (event) => {
    bar.max = event.total || bar.max;
    bar.value = event.loaded;
  });
  request.addEventListener("load", () => {
    bar.value = bar.max;
    let answer = {};
    try {
      answer = JSON.parse(request.responseText);
    } catch (error) {
      answer = { detail: request.statusText };
    }
    if (request.status === 202) {
      said(item, answer.created ? `queued, job ${answer.id}` : `sent before: job ${answer.id}`);
      follow(item, answer);
    } else {
      const detail = typeof answer.detail === "string" ? answer.detail : request.statusText;
      said(item, `refused (${request.status}): ${detail}`, "bad");
    }
  });
  request.addEventListener("error", () => said(item, "not sent: the daemon is unreachable", "bad"));
  request.send(body);
}

function sendAll(form, files) {
  const chosen = form.querySelector("input[name=preset]:checked");
  const preset = chosen ? chosen.value : "";
  for (const file of files) {
    send(form, file, preset);
  }
}

function setUpUploads() {
  const form = document.getElementById("upload-form");
  if (!form) {
    return;
  }
  const input = document.getElementById("upload-files");
  const drop = document.getElementById("upload-drop");
  form.addEventListener("submit", (event) => event.preventDefault());
  input.addEventListener("change", () => {
    sendAll(form, [...input.files]);
    input.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    sendAll(form, [...event.dataTransfer.files]);
  });
}

// -- the before/after view: the photo over the result, cut at the slider's place.
function setUpCompare() {
  const slider = document.getElementById("compare-slider");
  const before = document.getElementById("compare-before");
  const line = document.getElementById("compare-line");
  if (!slider || !before) {
    return;
  }
  const place = () => {
    const shown = Number(slider.value);
    before.style.clipPath = `inset(0 ${100 - shown}% 0 0)`;
    line.style.left = `${shown}%`;
  };
  slider.addEventListener("input", place);
  place();
}

document.addEventListener("DOMContentLoaded", () => {
  setUpUploads();
  setUpCompare();
});

// -- paintings: added through POST /api/v1/presets, removed through DELETE; the daemon makes
// (or drops) the preset at its next look at the folder.
function setUpPaintings() {
  const form = document.getElementById("painting-form");
  if (form) {
    const line = document.getElementById("painting-said");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      line.textContent = "sending";
      fetch("/api/v1/presets", {
        method: "POST",
        headers: { "X-CSRF-Token": form.dataset.csrf },
        body: new FormData(form),
      })
        .then((response) => response.json().then((answer) => [response.status, answer]))
        .then(([status, answer]) => {
          line.textContent =
            status === 202
              ? `added: preset ${answer.name} (${answer.file}), ready in a few seconds`
              : `refused (${status}): ${answer.detail}`;
        })
        .catch(() => {
          line.textContent = "not sent: the daemon is unreachable";
        });
    });
  }
  for (const button of document.querySelectorAll("button.remove-painting")) {
    button.addEventListener("click", () => {
      fetch(`/api/v1/presets/${encodeURIComponent(button.dataset.name)}`, {
        method: "DELETE",
        headers: { "X-CSRF-Token": button.dataset.csrf },
      }).then((response) => {
        button.textContent = response.ok ? "removed" : `refused (${response.status})`;
        button.disabled = true;
      });
    });
  }
}

document.addEventListener("DOMContentLoaded", setUpPaintings);
