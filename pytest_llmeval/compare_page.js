/* pytest-llmeval run comparison filters (inlined by compare_page.py; no values are interpolated here).
 *
 * Each changed case is a <tr class="cmp-case"> with data-change (pass-fail, fail-pass
 * or other) and data-pair; each (test, model) is a <section class="cmp-pair"> with
 * data-pair. The filters compare those escaped attribute values with the selected
 * option values and hide what does not match.
 */
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

  function apply() {
    var change = byId("cmp-filter-change").value;
    var pair = byId("cmp-filter-pair").value;
    var shown = 0;
    var total = 0;
    var sections = document.querySelectorAll("section.cmp-pair");
    for (var i = 0; i < sections.length; i++) {
      var sec = sections[i];
      var pairVisible = !pair || sec.getAttribute("data-pair") === pair;
      sec.classList.toggle("cmp-hidden", !pairVisible);
      var rows = sec.querySelectorAll("tr.cmp-case");
      var here = 0;
      for (var j = 0; j < rows.length; j++) {
        var row = rows[j];
        var visible = pairVisible && (!change || row.getAttribute("data-change") === change);
        row.classList.toggle("cmp-hidden", !visible);
        total += 1;
        if (visible) {
          here += 1;
          shown += 1;
        }
      }
      var none = sec.querySelector(".cmp-none-match");
      if (none) none.classList.toggle("cmp-hidden", here > 0 || rows.length === 0);
    }
    byId("cmp-count").textContent = shown + " of " + total + " changed cases shown";
  }

  function reset() {
    byId("cmp-filter-change").value = "";
    byId("cmp-filter-pair").value = "";
    apply();
  }

  function init() {
    byId("cmp-filter-change").addEventListener("change", apply);
    byId("cmp-filter-pair").addEventListener("change", apply);
    byId("cmp-filter-reset").addEventListener("click", reset);
    apply();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
