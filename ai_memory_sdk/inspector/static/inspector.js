// ai-memory inspector: confirmations, local times, and reloading a run page until the run ends.
"use strict";
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("time[datetime]")) {
    const t = new Date(el.getAttribute("datetime"));
    if (!isNaN(t)) el.title = t.toLocaleString();
  }
  const seconds = Number(document.body.dataset.refresh || 0);
  if (seconds > 0) setTimeout(() => window.location.reload(), seconds * 1000);
});
