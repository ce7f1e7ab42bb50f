// The live page of treasure's push service: a map of the road graph
// (GET /v1/map) with the players, treasures and claims of the spectator
// feed (GET /v1/spectate, docs/protocol.md). Plain JavaScript, no build
// step. Its state is window.__treasure, which the browser test reads.
'use strict';
(() => {
  const T = window.__treasure = {
    connected: false, view: null, hello: null, frames: 0, snapshots: 0,
    players: {}, treasures: {}, leaderboard: [], claims: [], stats: {},
    map: { loaded: false, coords: false, message: '' },
  };
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get('token');
  let interval = 200;
  const flashes = []; // claims being drawn: {x, y, t}

  // ---- the map ----------------------------------------------------------
  const canvas = $('map');
  const ctx = canvas.getContext('2d');
  let geo = null;   // the /v1/map answer
  let roads = null; // an offscreen canvas with the roads drawn
  let view = null;  // graph coordinates → canvas pixels

  fetch('/v1/map').then((r) => r.json()).then((m) => {
    T.map = { loaded: true, coords: !!m.coords, message: m.message || '', nodes: m.nodes, segments: m.coords ? m.segments.length / 4 : 0 };
    if (!m.coords) {
      const p = $('mapmsg');
      p.textContent = 'No map: ' + (m.message || 'the graph has no coordinates') + '. Players, claims and the leaderboard still update.';
      p.hidden = false;
      return;
    }
    geo = m;
    layout();
  }).catch((e) => { T.map = { loaded: false, coords: false, message: String(e) }; });

  function layout() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, canvas.clientWidth), h = Math.max(1, canvas.clientHeight);
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    if (!geo) return;
    const [minX, minY] = geo.bbox, [maxX, maxY] = geo.extent;
    const pad = 12 * dpr;
    const sx = (canvas.width - 2 * pad) / Math.max(1, maxX - minX);
    const sy = (canvas.height - 2 * pad) / Math.max(1, maxY - minY);
    const s = Math.min(sx, sy);
    const ox = (canvas.width - s * (maxX - minX)) / 2, oy = (canvas.height - s * (maxY - minY)) / 2;
    // North up: y grows upwards in the graph, downwards on the screen.
    view = { x: (x) => ox + (x - minX) * s, y: (y) => canvas.height - oy - (y - minY) * s, dpr };
    const cell = (geo.bbox[2] - geo.bbox[0]) / geo.grid;
    roads = document.createElement('canvas');
    roads.width = canvas.width;
    roads.height = canvas.height;
    const r = roads.getContext('2d');
    r.strokeStyle = '#3a4452';
    r.lineWidth = Math.max(1, 0.8 * dpr);
    r.beginPath();
    const seg = geo.segments;
    for (let i = 0; i + 3 < seg.length; i += 4) {
      r.moveTo(view.x(minX + (seg[i] + 0.5) * cell), view.y(minY + (seg[i + 1] + 0.5) * cell));
      r.lineTo(view.x(minX + (seg[i + 2] + 0.5) * cell), view.y(minY + (seg[i + 3] + 0.5) * cell));
    }
    r.stroke();
  }
  window.addEventListener('resize', layout);
  layout();

  function colour(id) {
    let h = 0;
    for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
    return 'hsl(' + (h % 360) + ',70%,62%)';
  }

  function draw(now) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (view && roads) {
      ctx.drawImage(roads, 0, 0);
      const d = view.dpr;
      ctx.fillStyle = '#f2c14e';
      for (const id in T.treasures) {
        const t = T.treasures[id];
        const x = view.x(t.x), y = view.y(t.y), r = 4 * d;
        ctx.beginPath();
        ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y);
        ctx.fill();
      }
      for (const id in T.players) {
        const p = T.players[id];
        const k = Math.min(1, (now - p.t) / interval);
        const x = view.x(p.fx + (p.x - p.fx) * k), y = view.y(p.fy + (p.y - p.fy) * k);
        ctx.fillStyle = colour(id);
        ctx.fillRect(x - 2 * d, y - 2 * d, 4 * d, 4 * d);
      }
      for (let i = flashes.length - 1; i >= 0; i--) {
        const f = flashes[i], age = (now - f.t) / 1500;
        if (age >= 1) { flashes.splice(i, 1); continue; }
        ctx.strokeStyle = 'rgba(242,193,78,' + (1 - age) + ')';
        ctx.lineWidth = 2 * d;
        ctx.beginPath();
        ctx.arc(view.x(f.x), view.y(f.y), (4 + 26 * age) * d, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);

  // ---- the feed ---------------------------------------------------------
  let backoff = 500;
  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(proto + '//' + location.host + '/v1/spectate' + (token ? '?token=' + encodeURIComponent(token) : ''));
    ws.onopen = () => { T.connected = true; backoff = 500; state('live', 'live'); };
    ws.onmessage = (ev) => {
      for (const line of ev.data.split('\n')) {
        if (line) handle(JSON.parse(line));
      }
    };
    ws.onclose = (ev) => {
      T.connected = false;
      state('closed', 'disconnected' + (ev.reason ? ' (' + ev.reason + ')' : '') + '; reconnecting…');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  function state(s, text) {
    document.body.dataset.state = s;
    $('status').textContent = text;
  }

  function handle(m) {
    switch (m.type) {
      case 'hello':
        T.hello = m;
        T.view = m.view;
        interval = m.interval_ms || 200;
        $('view').textContent = m.view === 'treasures'
          ? 'Treasure view: active treasures shown (spectator token).'
          : 'Public view: active treasures are hidden (open the page with ?token=<a spectator token> to see them).';
        break;
      case 'snapshot':
        T.snapshots++;
        T.players = {};
        T.treasures = {};
        T.claims = [];
        apply(m, m.players);
        break;
      case 'frame':
        T.frames++;
        apply(m, m.moves);
        break;
    }
  }

  function apply(m, moves) {
    const now = performance.now();
    for (const [id, node, x, y] of moves || []) {
      const p = T.players[id];
      if (p) {
        const k = Math.min(1, (now - p.t) / interval);
        p.fx += (p.x - p.fx) * k; p.fy += (p.y - p.fy) * k;
        p.node = node; p.x = x; p.y = y; p.t = now;
      } else {
        T.players[id] = { node, x, y, fx: x, fy: y, t: now };
      }
    }
    for (const id of m.gone || []) delete T.players[id];
    for (const [id, node, x, y, points] of m.treasures || []) T.treasures[id] = { node, x, y, points };
    for (const c of m.claims || []) {
      delete T.treasures[c.treasure];
      T.claims.unshift(c);
      if (m.type === 'frame') flashes.push({ x: c.at[1], y: c.at[2], t: now });
    }
    T.claims.length = Math.min(T.claims.length, 30);
    if (m.claims && m.claims.length) renderClaims();
    if (m.leaderboard) {
      T.leaderboard = m.leaderboard.top || [];
      renderBoard();
    }
    if (m.stats) {
      T.stats = m.stats;
      renderStats();
    }
  }

  function li(parts) {
    const el = document.createElement('li');
    for (const [cls, text] of parts) {
      const s = document.createElement('span');
      s.className = cls;
      s.textContent = text; // never HTML: player ids are whatever a token says
      el.appendChild(s);
    }
    return el;
  }

  function renderBoard() {
    const ol = $('board');
    ol.replaceChildren(...T.leaderboard.slice(0, 20).map((e) => {
      const el = li([['rank', e.rank], ['name', e.player], ['score', e.score]]);
      el.dataset.player = e.player;
      el.dataset.score = e.score;
      return el;
    }));
  }

  function renderClaims() {
    $('claims').replaceChildren(...T.claims.map((c) => li([['name', c.player + ' → ' + c.treasure], ['pts', '+' + c.points]])));
  }

  const fmt = (n) => (n === undefined || n < 0 ? '–' : Number(n).toLocaleString('en'));
  function renderStats() {
    const s = T.stats;
    $('s-rate').textContent = fmt(Math.round(s.moves_per_s));
    $('s-backlog').textContent = fmt(s.backlog);
    $('s-players').textContent = fmt(s.players);
    $('s-followed').textContent = fmt(s.followed);
    $('s-treasures').textContent = T.view === 'treasures' ? fmt(s.treasures_known) : 'hidden';
    $('s-spectators').textContent = fmt(s.spectators);
  }

  connect();
})();
