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
