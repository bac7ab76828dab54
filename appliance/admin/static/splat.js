/* The fallback splat preview, where WebGL2 is missing or Spark cannot load (viewer.js
   decides and calls window.fieldboxSoftDot). A small own Gaussian-splat viewer: reads a
   3DGS .ply (binary_little_endian, float properties x y z f_dc_0..2 opacity scale_0..2
   ...) and draws every Gaussian as a round, soft-edged, alpha-blended sprite (colour from
   the SH DC term, size from its scale), sorted back to front. WebGL when the browser has
   it, else a 2D canvas. Drag to orbit, wheel or pinch to zoom. */
(function () {
  'use strict';
  var SH_C0 = 0.28209479177387814;
  var TYPES = { float: 4, float32: 4, double: 8, uchar: 1, uint8: 1, char: 1, int: 4, uint: 4, short: 2, ushort: 2 };

  function parse(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = new TextDecoder().decode(bytes.subarray(0, Math.min(bytes.length, 65536)));
    var end = text.indexOf('end_header\n');
    if (text.slice(0, 3) !== 'ply' || end < 0) { throw new Error('not a .ply file'); }
    var count = 0, props = [], stride = 0;
    text.slice(0, end).split('\n').forEach(function (line) {
      var w = line.trim().split(/\s+/);
      if (w[0] === 'format' && w[1] !== 'binary_little_endian') { throw new Error('unsupported ply format ' + w[1]); }
      if (w[0] === 'element' && w[1] === 'vertex') { count = parseInt(w[2], 10); }
      if (w[0] === 'property') {
        if (w[1] !== 'float' && w[1] !== 'float32') { throw new Error('property ' + w[2] + ' is ' + w[1]); }
        props.push(w[2]); stride += TYPES[w[1]];
      }
    });
    var offset = end + 'end_header\n'.length;
    var view = new DataView(buffer, offset);
    var at = {};
    props.forEach(function (name, i) { at[name] = i * 4; });
    ['x', 'y', 'z', 'f_dc_0', 'f_dc_1', 'f_dc_2', 'opacity'].forEach(function (name) {
      if (!(name in at)) { throw new Error('the .ply has no ' + name); }
    });
    var pos = new Float32Array(count * 3), col = new Float32Array(count * 4), size = new Float32Array(count);
    for (var i = 0; i < count; i++) {
      var b = i * stride;
      var f = function (name) { return view.getFloat32(b + at[name], true); };
      pos[3 * i] = f('x'); pos[3 * i + 1] = -f('y'); pos[3 * i + 2] = f('z');
      for (var c = 0; c < 3; c++) {
        col[4 * i + c] = Math.min(1, Math.max(0, 0.5 + SH_C0 * f('f_dc_' + c)));
      }
      col[4 * i + 3] = 1 / (1 + Math.exp(-f('opacity')));
      size[i] = 'scale_0' in at ? Math.exp((f('scale_0') + f('scale_1') + f('scale_2')) / 3) : 0.01;
    }
    return { count: count, pos: pos, col: col, size: size };
  }

  function centre(s) {
    var c = [0, 0, 0], r = 0, i, k;
    for (i = 0; i < s.count; i++) { for (k = 0; k < 3; k++) { c[k] += s.pos[3 * i + k] / s.count; } }
    for (i = 0; i < s.count; i++) {
      var dx = s.pos[3 * i] - c[0], dy = s.pos[3 * i + 1] - c[1], dz = s.pos[3 * i + 2] - c[2];
      r += Math.sqrt(dx * dx + dy * dy + dz * dz) / s.count;
    }
    return { c: c, r: Math.max(r, 1e-6) };
  }

  function project(s, view, w, h) {
    // Orbit camera: yaw, pitch, distance; returns screen x, y, depth and sprite radius.
    var cy = Math.cos(view.yaw), sy = Math.sin(view.yaw), cp = Math.cos(view.pitch), sp = Math.sin(view.pitch);
    var out = new Float32Array(s.count * 4), f = Math.min(w, h) * 1.2;
    for (var i = 0; i < s.count; i++) {
      var x = s.pos[3 * i] - view.c[0], y = s.pos[3 * i + 1] - view.c[1], z = s.pos[3 * i + 2] - view.c[2];
      var x1 = cy * x + sy * z, z1 = -sy * x + cy * z;
      var y2 = cp * y - sp * z1, z2 = sp * y + cp * z1 + view.dist;
      var d = Math.max(z2, 1e-3);
      out[4 * i] = w / 2 + f * x1 / d; out[4 * i + 1] = h / 2 + f * y2 / d;
      out[4 * i + 2] = d; out[4 * i + 3] = Math.max(1.5, Math.min(40, 2.5 * f * s.size[i] / d));
    }
    return out;
  }

  function order(p, n) {
    var idx = new Uint32Array(n);
    for (var i = 0; i < n; i++) { idx[i] = i; }
    return Array.prototype.slice.call(idx).sort(function (a, b) { return p[4 * b + 2] - p[4 * a + 2]; });
  }

  function glRenderer(canvas) {
    var gl = canvas.getContext('webgl', { premultipliedAlpha: false });
    if (!gl) { return null; }
    var vs = 'attribute vec2 a_xy; attribute float a_r; attribute vec4 a_c; uniform vec2 u_wh; varying vec4 v_c;' +
      'void main(){ gl_Position = vec4(a_xy / u_wh * 2.0 - 1.0, 0.0, 1.0); gl_Position.y = -gl_Position.y;' +
      ' gl_PointSize = a_r * 2.0; v_c = a_c; }';
    var fs = 'precision mediump float; varying vec4 v_c; void main(){ vec2 d = gl_PointCoord - 0.5;' +
      ' float e = exp(-dot(d, d) * 16.0); if (e < 0.02) discard; gl_FragColor = vec4(v_c.rgb, v_c.a * e); }';
    function shader(type, src) {
      var sh = gl.createShader(type); gl.shaderSource(sh, src); gl.compileShader(sh);
      if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) { throw new Error(gl.getShaderInfoLog(sh)); }
      return sh;
    }
    var prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, vs)); gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(prog); gl.useProgram(prog);
    var buf = gl.createBuffer();
    var loc = { xy: gl.getAttribLocation(prog, 'a_xy'), r: gl.getAttribLocation(prog, 'a_r'), c: gl.getAttribLocation(prog, 'a_c') };
    gl.enable(gl.BLEND); gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
    return {
      name: 'webgl',
      draw: function (s, p, idx, w, h) {
        var data = new Float32Array(idx.length * 7);
        idx.forEach(function (i, k) {
          data.set([p[4 * i], p[4 * i + 1], p[4 * i + 3], s.col[4 * i], s.col[4 * i + 1], s.col[4 * i + 2], s.col[4 * i + 3]], 7 * k);
        });
        gl.viewport(0, 0, w, h); gl.clearColor(0.07, 0.08, 0.1, 1); gl.clear(gl.COLOR_BUFFER_BIT);
        gl.bindBuffer(gl.ARRAY_BUFFER, buf); gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
        gl.uniform2f(gl.getUniformLocation(prog, 'u_wh'), w, h);
        gl.enableVertexAttribArray(loc.xy); gl.vertexAttribPointer(loc.xy, 2, gl.FLOAT, false, 28, 0);
        gl.enableVertexAttribArray(loc.r); gl.vertexAttribPointer(loc.r, 1, gl.FLOAT, false, 28, 8);
        gl.enableVertexAttribArray(loc.c); gl.vertexAttribPointer(loc.c, 4, gl.FLOAT, false, 28, 12);
        gl.drawArrays(gl.POINTS, 0, idx.length);
      }
    };
  }

  function canvasRenderer(canvas) {
    var ctx = canvas.getContext('2d');
    return {
      name: '2d',
      draw: function (s, p, idx, w, h) {
        ctx.fillStyle = '#12141a'; ctx.fillRect(0, 0, w, h);
        idx.forEach(function (i) {
          var c = s.col;
          ctx.fillStyle = 'rgba(' + Math.round(255 * c[4 * i]) + ',' + Math.round(255 * c[4 * i + 1]) + ',' +
            Math.round(255 * c[4 * i + 2]) + ',' + (c[4 * i + 3] * 0.8).toFixed(3) + ')';
          ctx.beginPath(); ctx.arc(p[4 * i], p[4 * i + 1], p[4 * i + 3] * 0.5, 0, 2 * Math.PI); ctx.fill();
        });
      }
    };
  }

  function start(el) {
    var canvas = el.querySelector('canvas'), info = el.querySelector('[data-splat-info]');
    fetch(el.dataset.ply, { credentials: 'same-origin' }).then(function (resp) {
      if (!resp.ok) { throw new Error('HTTP ' + resp.status); }
      return resp.arrayBuffer();
    }).then(function (buffer) {
      var s = parse(buffer), fit = centre(s);
      var view = { yaw: 0.6, pitch: -0.3, dist: fit.r * 3.5, c: fit.c };
      var renderer = glRenderer(canvas) || canvasRenderer(canvas);
      var frame = function () {
        var w = canvas.width = canvas.clientWidth || 640, h = canvas.height = canvas.clientHeight || 420;
        var p = project(s, view, w, h);
        renderer.draw(s, p, order(p, s.count), w, h);
      };
      var drag = null;
      canvas.addEventListener('pointerdown', function (e) { drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId); });
      canvas.addEventListener('pointerup', function () { drag = null; });
      canvas.addEventListener('pointermove', function (e) {
        if (!drag) { return; }
        view.yaw += (e.clientX - drag[0]) * 0.01; view.pitch += (e.clientY - drag[1]) * 0.01;
        drag = [e.clientX, e.clientY]; window.requestAnimationFrame(frame);
      });
      canvas.addEventListener('wheel', function (e) {
        e.preventDefault(); view.dist *= e.deltaY > 0 ? 1.1 : 0.9; window.requestAnimationFrame(frame);
      }, { passive: false });
      frame();
      el.dataset.gaussians = String(s.count);
      el.dataset.renderer = 'soft-dot';
      el.dataset.backend = renderer.name;
      el.dataset.state = 'ready';
      info.textContent = s.count + ' Gaussians (soft-dot preview, ' + renderer.name + ', ' +
        (el.dataset.fallbackReason || 'fallback') + '); drag to orbit, scroll to zoom';
    }).catch(function (err) {
      el.dataset.error = String(err.message || err);
      info.textContent = 'cannot show this splat: ' + (err.message || err);
    });
  }

  window.fieldboxSoftDot = start;
  // viewer.js may have asked before this file ran.
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('[data-ply][data-fallback-pending]').forEach(function (el) {
      delete el.dataset.fallbackPending;
      start(el);
    });
  });
}());
