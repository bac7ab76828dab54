/* The job page's splat viewer: Spark (@sparkjsdev/spark, a real 3DGS rasterizer on
   three.js and WebGL2), served by the api from appliance/admin/vendor. Where WebGL2 is
   missing, or Spark cannot load, splat.js's soft-dot preview takes over.

   The element carries its config in data- attributes (the CSP forbids inline script):
   data-ply (the .ply URL), data-cameras (the cameras.json URL, optional). It reports
   data-renderer ("spark"), data-gaussians, data-view ("orbit" or "camera:N") and
   data-state: "loading", "drawing" (a new view waits for Spark's depth sort), "ready"
   (the frame on the canvas shows the loaded splat from the current view), or data-error.
   A training camera can be chosen in the page's select, by `?camera=N`, or by
   `el.fieldboxView(N)` (tests). */

function hasWebGL2() {
  try {
    return !!document.createElement('canvas').getContext('webgl2');
  } catch (err) {
    return false;
  }
}

function fallback(el, why) {
  el.dataset.fallbackReason = why;
  if (typeof window.fieldboxSoftDot === 'function') {
    window.fieldboxSoftDot(el);
  } else {
    el.dataset.fallbackPending = 'true'; // splat.js picks it up when it loads
  }
}

/* COLMAP world-to-camera [R|t] (x right, y down, z forward) to a three.js camera pose
   (x right, y up, looking down -z): c2w = inverse([R|t]) · diag(1, -1, -1). */
function poseOf(THREE, frame) {
  const R = frame.R, t = frame.t;
  const w2c = new THREE.Matrix4().set(
    R[0][0], R[0][1], R[0][2], t[0],
    R[1][0], R[1][1], R[1][2], t[1],
    R[2][0], R[2][1], R[2][2], t[2],
    0, 0, 0, 1);
  return w2c.invert().multiply(new THREE.Matrix4().makeScale(1, -1, -1));
}

/* The pinhole's own frustum, principal point included (three.js's fov assumes it is
   centred). */
function projectionOf(THREE, frame, near, far) {
  const left = -frame.cx / frame.fx * near, right = (frame.width - frame.cx) / frame.fx * near;
  const top = frame.cy / frame.fy * near, bottom = -(frame.height - frame.cy) / frame.fy * near;
  return new THREE.Matrix4().makePerspective(left, right, top, bottom, near, far);
}

async function loadCameras(url) {
  if (!url) { return []; }
  const resp = await fetch(url, { credentials: 'same-origin' });
  if (!resp.ok) { throw new Error('cameras.json: HTTP ' + resp.status); }
  const doc = await resp.json();
  if (doc.convention !== 'colmap-w2c' || !Array.isArray(doc.frames)) {
    throw new Error('cameras.json: unknown convention ' + doc.convention);
  }
  return doc.frames;
}

function fillSelect(select, frames) {
  if (!select) { return; }
  frames.forEach((f, i) => {
    const opt = document.createElement('option');
    opt.value = String(i);
    opt.textContent = 'camera ' + i + ': ' + f.name + (f.held_out ? ' (held out)' : '');
    select.appendChild(opt);
  });
  select.hidden = frames.length === 0;
}

async function start(el) {
  const canvas = el.querySelector('canvas');
  const info = el.querySelector('[data-splat-info]');
  const select = el.querySelector('[data-splat-camera]');
  const THREE = await import('three');
  const { SparkRenderer, SplatMesh } = await import('@sparkjsdev/spark');
  const { OrbitControls } = await import('three/addons/controls/OrbitControls.js');
  el.dataset.renderer = 'spark';
  el.dataset.state = 'loading';
  const baseWidth = canvas.width, baseHeight = canvas.height;
  // preserveDrawingBuffer: the frame stays readable (screenshots, the tests' pixels).
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setClearColor(0x000000, 1); // the trainer's background
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(50, baseWidth / baseHeight, 0.01, 1000);
  // A view is drawn when a frame rendered after the change finds Spark's depth sort
  // neither running nor due: the render that sees a new view starts a sort (in a worker),
  // and the sort's end asks for one more frame (onDirty), the one drawn in the new order.
  let drawn = 0, drawnAtChange = 0, queued = false;
  const draw = () => {
    queued = false;
    renderer.render(scene, camera);
    drawn += 1;
    el.dataset.frames = String(drawn);
    if (el.dataset.state !== 'drawing') { return; }
    if (drawn > drawnAtChange && !spark.sorting && !spark.sortDirty) {
      el.dataset.state = 'ready';
    }
  };
  const schedule = () => {
    if (!queued) { queued = true; window.requestAnimationFrame(draw); }
  };
  // The trainer's rasterizer adds 0.3 px² to each 2D covariance with no opacity change:
  // Spark's preBlurAmount, not its anti-aliasing blurAmount.
  const spark = new SparkRenderer({
    renderer, preBlurAmount: 0.3, blurAmount: 0.0,
    onDirty: schedule,
  });
  scene.add(spark);
  const [frames, mesh] = await Promise.all([
    loadCameras(el.dataset.cameras),
    new SplatMesh({ url: el.dataset.ply }).initialized,
  ]);
  scene.add(mesh);
  const controls = new OrbitControls(camera, canvas);
  const changed = (view) => {
    el.dataset.view = view;
    el.dataset.state = 'drawing';
    drawnAtChange = drawn;
    schedule();
  };
  controls.addEventListener('change', () => {
    if (el.dataset.view !== 'orbit') { resize(baseWidth, baseHeight); }
    changed('orbit');
  });
  const resize = (w, h) => {
    renderer.setSize(w, h, false);
    canvas.style.aspectRatio = w + ' / ' + h; // through the CSSOM, which the CSP allows
  };
  const orbit = () => {
    const box = new THREE.Box3().setFromObject(mesh);
    const centre = box.getCenter(new THREE.Vector3());
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-3);
    resize(baseWidth, baseHeight);
    camera.aspect = baseWidth / baseHeight;
    camera.updateProjectionMatrix();
    camera.up.set(0, -1, 0); // COLMAP's world has y down
    camera.position.copy(centre).add(new THREE.Vector3(0, 0, -radius * 1.6));
    controls.target.copy(centre);
    controls.update();
    changed('orbit');
  };
  const view = (index) => {
    const f = frames[index];
    if (!f) { throw new Error('no camera ' + index); }
    resize(f.width, f.height); // the photo's own pixels: one canvas pixel per training pixel
    const pose = poseOf(THREE, f);
    pose.decompose(camera.position, camera.quaternion, camera.scale);
    camera.up.set(0, 1, 0).applyQuaternion(camera.quaternion);
    camera.updateMatrixWorld(true);
    camera.projectionMatrix.copy(projectionOf(THREE, f, camera.near, camera.far));
    camera.projectionMatrixInverse.copy(camera.projectionMatrix).invert();
    // Orbiting from here turns around a point in front of the camera.
    const ahead = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion);
    controls.target.copy(camera.position).addScaledVector(ahead, 1.0);
    if (select) { select.value = String(index); }
    changed('camera:' + index);
  };
  el.fieldboxView = (index) => (index === null || index < 0 ? orbit() : view(index));
  fillSelect(select, frames);
  if (select) {
    select.addEventListener('change', () => el.fieldboxView(select.value === '' ? -1 : Number(select.value)));
  }
  const asked = new URLSearchParams(window.location.search).get('camera');
  const first = frames.findIndex((f) => !f.held_out);
  el.fieldboxView(asked !== null && frames[Number(asked)] ? Number(asked) : first);
  el.dataset.gaussians = String(mesh.packedSplats ? mesh.packedSplats.numSplats : mesh.numSplats);
  info.textContent = el.dataset.gaussians + ' Gaussians (Spark, WebGL2); drag to orbit, scroll to zoom' +
    (frames.length ? ', or pick a training camera' : '');
}

document.querySelectorAll('[data-ply]').forEach((el) => {
  if (!hasWebGL2()) {
    fallback(el, 'no WebGL2');
    return;
  }
  start(el).catch((err) => {
    // Spark did not come up (a browser without its features, a missing vendor folder):
    // the preview still shows the splat, and says why.
    console.warn('spark viewer: ' + (err && err.message ? err.message : err));
    el.dataset.sparkError = String(err && err.message ? err.message : err);
    delete el.dataset.renderer;
    delete el.dataset.state;
    const fresh = document.createElement('canvas');
    fresh.width = 640; fresh.height = 420;
    el.querySelector('canvas').replaceWith(fresh);
    fallback(el, 'spark failed');
  });
});
