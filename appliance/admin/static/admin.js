/* fieldbox admin: charts (uPlot), quiet page refresh, live job progress (SSE), confirms. */
(function () {
  'use strict';

  function drawCharts(root) {
    root.querySelectorAll('[data-chart]').forEach(function (el) {
      var source = document.getElementById(el.dataset.chart);
      if (!source || el.dataset.drawn) { return; }
      var data = JSON.parse(source.textContent);
      var ys = data[el.dataset.y] || [];
      el.dataset.drawn = '1';
      if (!data.t || data.t.length === 0 || ys.every(function (v) { return v === null; })) {
        el.textContent = 'no data yet';
        el.classList.add('empty');
        return;
      }
      if (typeof window.uPlot !== 'function') {
        el.textContent = 'chart library missing (run make install)';
        return;
      }
      var opts = {
        width: Math.max(220, el.clientWidth || 300),
        height: 150,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: true } },
        axes: [{ size: 30 }, { size: 55 }],
        series: [{}, {
          label: el.dataset.label, stroke: '#2563eb', width: 2,
          fill: 'rgba(37, 99, 235, 0.12)', points: { show: true, size: 4 }
        }]
      };
      new window.uPlot(opts, [data.t, ys], el);
    });
  }

  function busy() {
    var a = document.activeElement;
    return document.hidden || (a && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName));
  }

  function startRefresh() {
    var main = document.getElementById('main');
    var every = main && parseInt(main.dataset.refresh || '0', 10);
    if (!every) { return; }
    window.setInterval(function () {
      if (busy()) { return; }
      fetch(window.location.href, { credentials: 'same-origin' }).then(function (resp) {
        if (resp.redirected || !resp.ok) { window.location.reload(); return null; }
        return resp.text();
      }).then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.getElementById('main');
        if (fresh) { main.innerHTML = fresh.innerHTML; drawCharts(main); placeBoxes(main); }
      }).catch(function () { /* the box restarting: try again next time */ });
    }, every * 1000);
  }

  var TERMINAL = ['succeeded', 'failed', 'dead', 'cancelled'];
  var EVENTS = ['queued', 'started', 'stage_started', 'progress', 'stage_done', 'retrying',
    'lease_expired', 'released', 'cancel_requested'].concat(TERMINAL);

  function followJob() {
    var card = document.getElementById('job-card');
    if (!card || TERMINAL.indexOf(card.dataset.status) >= 0 || !window.EventSource) { return; }
    var url = '/admin/jobs/' + encodeURIComponent(card.dataset.job) + '/events?after=' +
      encodeURIComponent(card.dataset.lastSeq || '0');
    var source = new EventSource(url);
    var table = document.querySelector('#events tbody');
    EVENTS.forEach(function (type) {
      source.addEventListener(type, function (ev) {
        var data = JSON.parse(ev.data);
        var row = document.createElement('tr');
        [ev.lastEventId, new Date(data.at * 1000).toLocaleString(), type,
          JSON.stringify(data)].forEach(function (text, i) {
          var td = document.createElement('td');
          td.textContent = text;
          if (i === 3) { td.className = 'detail'; }
          row.appendChild(td);
        });
        if (table) { table.appendChild(row); }
        if (typeof data.fraction === 'number') {
          document.getElementById('job-progress').value = data.fraction;
        }
        if (data.stage) { document.getElementById('job-stage').textContent = data.stage; }
        var status = document.getElementById('job-status');
        if (type === 'started') { status.textContent = 'running'; }
        if (TERMINAL.indexOf(type) >= 0) {
          status.textContent = type;
          source.close();
          window.setTimeout(function () { window.location.reload(); }, 300);
        }
      });
    });
  }

  // The CSP allows no style attributes: frame sizes and box positions arrive as data
  // attributes and are set through the CSSOM, which the policy does not block.
  function placeBoxes(root) {
    root.querySelectorAll('[data-aspect]').forEach(function (el) {
      el.style.aspectRatio = el.dataset.aspect;
    });
    root.querySelectorAll('[data-place]').forEach(function (el) {
      var p = el.dataset.place.split(' ').map(Number);
      el.style.left = p[0] + '%';
      el.style.top = p[1] + '%';
      el.style.width = p[2] + '%';
      el.style.height = p[3] + '%';
    });
  }

  // A job page opened from an ask citation (?track=N&frame=F): bring the chosen frame,
  // outlined and with the track's box highlighted, into view.
  function showChosenFrame() {
    var chosen = document.querySelector('.frame.selected');
    if (chosen && !window.location.hash) { chosen.scrollIntoView({ block: 'center' }); }
  }

  function confirms() {
    document.addEventListener('submit', function (ev) {
      var msg = ev.target.dataset && ev.target.dataset.confirm;
      if (msg && !window.confirm(msg)) { ev.preventDefault(); }
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    drawCharts(document);
    placeBoxes(document);
    showChosenFrame();
    startRefresh();
    followJob();
    confirms();
  });
}());
