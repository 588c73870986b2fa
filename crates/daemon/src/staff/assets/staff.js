// The staff page's only script (served from the box, no inline script): keeps "now at the
// lanes" live by long-polling /staff/lanes/live?v=VERSION; the server answers as soon as a lane
// changes (or after 20 s with no change) with the lanes' HTML, escaped by the server.
"use strict";
(function () {
  const section = document.getElementById("lanes");
  if (!section) return;
  let version = section.dataset.version;
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  async function follow() {
    for (;;) {
      try {
        const answer = await fetch(section.dataset.live + "?v=" + encodeURIComponent(version), {
          credentials: "same-origin",
          cache: "no-store",
          redirect: "manual",
        });
        if (answer.type === "opaqueredirect" || answer.status === 401) {
          window.location.assign("/staff/login");
          return;
        }
        if (answer.ok) {
          const next = answer.headers.get("x-lanes-version");
          const html = await answer.text();
          if (next !== version) {
            section.innerHTML = html;
            version = next;
            section.dataset.version = next;
          }
        } else {
          await wait(1000);
        }
      } catch (err) {
        await wait(1000);
      }
    }
  }
  follow();
})();
