/* pytest-llmeval report filters (inlined by report.py; no values are interpolated here).
 *
 * pytest-html 4 renders the results table client-side and replaces the whole
 * <table id="results-table"> on every sort, filter or expand. So the filters keep
 * their state here and re-apply it whenever a MutationObserver sees a new table.
 * Values come from escaped data-llm-* attributes that report.py writes.
 */
(function () {
  "use strict";
  var state = { model: "", tag: "", outcome: "" };

  function tagsOf(el) {
    try {
      var t = JSON.parse(el.getAttribute("data-llm-tags") || "[]");
      return Array.isArray(t) ? t : [];
    } catch (e) {
      return [];
    }
  }

  function rowMatches(tbody) {
    var cell = tbody.querySelector("td[data-llm-model]");
    if (!cell) {
      // Not an eval item: shown only while no eval filter is set.
      return !(state.model || state.tag || state.outcome);
    }
    if (state.model && cell.getAttribute("data-llm-model") !== state.model) return false;
    if (state.outcome && cell.getAttribute("data-llm-outcome") !== state.outcome) return false;
    if (state.tag && tagsOf(cell).indexOf(state.tag) < 0) return false;
    return true;
  }

  function sideBySideMatches(row) {
    if (state.tag && tagsOf(row).indexOf(state.tag) < 0) return false;
    if (state.outcome) {
      var outs = [];
      try { outs = JSON.parse(row.getAttribute("data-llm-outcomes") || "[]"); } catch (e) { outs = []; }
      if (outs.indexOf(state.outcome) < 0) return false;
    }
    return true;
  }

  function apply() {
    var shown = 0;
    var total = 0;
    var table = document.getElementById("results-table");
    if (table) {
      var bodies = table.querySelectorAll("tbody.results-table-row");
      for (var i = 0; i < bodies.length; i++) {
        var tb = bodies[i];
        if (tb.querySelector("#not-found-message")) continue;
        total++;
        var ok = rowMatches(tb);
        tb.classList.toggle("llm-filtered-out", !ok);
        if (ok) shown++;
      }
    }
    var rows = document.querySelectorAll("tr.llm-sbs-row");
    for (var j = 0; j < rows.length; j++) {
      rows[j].classList.toggle("llm-filtered-out", !sideBySideMatches(rows[j]));
    }
    var count = document.getElementById("llm-filter-count");
    if (count) count.textContent = "showing " + shown + " of " + total + " rows";
    return shown;
  }

  function set(name, value) {
    if (!(name in state)) return apply();
    state[name] = value || "";
    var sel = document.getElementById("llm-filter-" + name);
    if (sel && sel.value !== state[name]) sel.value = state[name];
    return apply();
  }

  // pytest-html's environment table (Python, platform, plugins) is noise in an eval report: it starts
  // collapsed; a click on its heading opens it (pytest-html's own toggle).
  function collapseEnvironment() {
    var table = document.getElementById("environment");
    var head = document.getElementById("environment-header");
    if (table && head && !table.classList.contains("hidden")) {
      table.classList.add("hidden");
      head.classList.add("collapsed");
    }
  }

  function init() {
    collapseEnvironment();
    var selects = document.querySelectorAll("select[data-llm-filter]");
    for (var i = 0; i < selects.length; i++) {
      selects[i].addEventListener("change", function (evt) {
        set(evt.target.getAttribute("data-llm-filter"), evt.target.value);
      });
    }
    var reset = document.getElementById("llm-filter-reset");
    if (reset) {
      reset.addEventListener("click", function () {
        state.model = state.tag = state.outcome = "";
        for (var k = 0; k < selects.length; k++) selects[k].value = "";
        apply();
      });
    }
    new MutationObserver(function (mutations) {
      for (var m = 0; m < mutations.length; m++) {
        var added = mutations[m].addedNodes;
        for (var n = 0; n < added.length; n++) {
          if (added[n].id === "results-table") return apply();
        }
      }
    }).observe(document.body, { childList: true });
    apply();
  }

  window.llmevalFilter = { set: set, apply: apply, state: state };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
