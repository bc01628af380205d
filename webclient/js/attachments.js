// Attachments (contract §12): the composer's attach button and drag-and-drop, uploads with
// progress (XMLHttpRequest: fetch cannot report upload progress), the pending tray, image
// previews from thumbnails, a viewer, and downloads.
//
// Downloads need the Bearer token, so an <img src> cannot point at the API: bytes are
// fetched with the token and shown from a data: URL (the page's CSP allows data: images,
// not blob:), or saved through a temporary object URL. Everything the server names (file
// names) is inserted as text, never as markup.

import { h, icon, replaceChildren, setText } from './dom.js';

const BASE = 'api/v1/attachments';
const MAX_PER_MESSAGE = 10;

let getToken = () => '';
let notify = () => {};
let onPendingChange = () => {};
/** Uploads in the tray: {file, id, meta, progress, error, xhr, el}. */
let pending = [];
/** Thumbnail and original data: URLs by path, so a re-render does not refetch. */
const cache = new Map();
let viewer = null;

/**
 * Wires the composer: an attach button and a hidden file input in `form`, drops on `dropZone`.
 * `token()` returns the session's token; `onChange` runs when the tray changes (the send
 * button enables with attachments and no text).
 */
export function setupAttachments({ form, dropZone, token, toast, onChange }) {
  getToken = token;
  notify = toast || notify;
  onPendingChange = onChange || onPendingChange;
  // A new login builds a new messenger over the same page: wire the composer once.
  if (document.getElementById('attach-btn')) return;
  const input = h('input', { attrs: { type: 'file', multiple: '', hidden: '', id: 'attach-input', 'aria-hidden': 'true', tabindex: '-1' } });
  const button = h('button', {
    className: 'icon-btn attach-btn',
    attrs: { type: 'button', id: 'attach-btn', title: 'Attach a photo or file', 'aria-label': 'Attach a photo or file' },
  });
  button.append(icon('M16.5 6v11.5a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10.5a1 1 0 0 1-2 0V6H10v9.5a2.5 2.5 0 0 0 5 0V5a4 4 0 0 0-8 0v12.5a5.5 5.5 0 0 0 11 0V6h-1.5z'));
  const tray = h('ul', { className: 'attach-tray', attrs: { id: 'attach-tray', 'aria-label': 'Attachments to send' } });
  tray.hidden = true;
  form.prepend(button, input);
  form.parentNode.insertBefore(tray, form);
  button.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    addFiles([...input.files], tray);
    input.value = '';
  });
  let depth = 0;
  dropZone.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    dropZone.classList.add('drop-target');
  });
  dropZone.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  dropZone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) dropZone.classList.remove('drop-target');
  });
  dropZone.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    dropZone.classList.remove('drop-target');
    addFiles([...e.dataTransfer.files], tray);
  });
}

function hasFiles(e) {
  return e.dataTransfer && [...e.dataTransfer.types].includes('Files');
}

function addFiles(files, tray) {
  for (const file of files) {
    if (pending.length >= MAX_PER_MESSAGE) {
      notify(`At most ${MAX_PER_MESSAGE} attachments per message.`);
      break;
    }
    const item = { file, id: null, meta: null, progress: 0, error: null, xhr: null, el: null };
    pending.push(item);
    item.el = trayItem(item, tray);
    tray.append(item.el);
    upload(item, tray);
  }
  tray.hidden = pending.length === 0;
  onPendingChange();
}

function trayItem(item, tray) {
  const bar = h('progress', { attrs: { max: '100', value: '0', 'aria-label': `Uploading ${item.file.name}` } });
  const remove = h('button', { className: 'attach-remove', text: '×', attrs: { type: 'button', title: 'Remove', 'aria-label': `Remove ${item.file.name}` } });
  remove.addEventListener('click', () => {
    if (item.xhr) item.xhr.abort();
    pending = pending.filter((p) => p !== item);
    item.el.remove();
    tray.hidden = pending.length === 0;
    onPendingChange();
  });
  return h('li', { className: 'attach-item' }, h('span', { className: 'attach-name', text: item.file.name, attrs: { dir: 'auto' } }), bar, h('span', { className: 'attach-state' }), remove);
}

function upload(item) {
  const xhr = new XMLHttpRequest();
  item.xhr = xhr;
  const bar = item.el.querySelector('progress');
  const state = item.el.querySelector('.attach-state');
  xhr.open('POST', `${BASE}?name=${encodeURIComponent(item.file.name)}`);
  xhr.setRequestHeader('Authorization', `Bearer ${getToken()}`);
  xhr.responseType = 'json';
  xhr.upload.addEventListener('progress', (e) => {
    if (!e.lengthComputable) return;
    item.progress = Math.round((e.loaded / e.total) * 100);
    bar.value = item.progress;
  });
  xhr.addEventListener('load', () => {
    item.xhr = null;
    const body = xhr.response || {};
    if (xhr.status === 201 && body.id) {
      item.id = body.id;
      item.meta = body;
      bar.value = 100;
      item.el.classList.add('done');
      item.el.dataset.id = body.id;
      setText(state, 'Ready');
    } else {
      const why = {
        413: 'too large',
        415: 'type not allowed (photos, PDF or plain text)',
      }[xhr.status] || (body.error && body.error.message) || `failed (${xhr.status})`;
      item.error = why;
      item.el.classList.add('failed');
      setText(state, why);
      notify(`${item.file.name}: ${why}`);
    }
    onPendingChange();
  });
  xhr.addEventListener('error', () => {
    item.xhr = null;
    item.error = 'network';
    item.el.classList.add('failed');
    setText(state, "Can't reach the server");
    onPendingChange();
  });
  xhr.send(item.file);
}

/** Whether the tray holds uploads that are ready, and none still uploading. */
export function attachmentsReady() {
  return pending.some((p) => p.id) && !pending.some((p) => p.xhr);
}

/** Whether uploads are still running. */
export function attachmentsUploading() {
  return pending.some((p) => p.xhr);
}

/** The ids of the finished uploads, and empties the tray (they go with the next message). */
export function takeAttachments() {
  const ids = pending.filter((p) => p.id).map((p) => p.id);
  for (const p of pending) p.el.remove();
  const tray = document.getElementById('attach-tray');
  if (tray) tray.hidden = true;
  pending = [];
  onPendingChange();
  return ids;
}

async function fetchDataUrl(path) {
  if (cache.has(path)) return cache.get(path);
  const res = await fetch(`${BASE}/${path}`, { headers: { Authorization: `Bearer ${getToken()}` } });
  if (!res.ok) throw new Error(res.status === 404 ? 'not available' : `failed (${res.status})`);
  const blob = await res.blob();
  const url = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  cache.set(path, { url, type: res.headers.get('content-type') || '', name: fileName(res) });
  return cache.get(path);
}

/** The download name from Content-Disposition's filename* (or filename). */
function fileName(res) {
  const header = res.headers.get('content-disposition') || '';
  const star = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch {
      // fall through to the ASCII name
    }
  }
  const plain = /filename="([^"]*)"/i.exec(header);
  return plain ? plain[1] : 'attachment';
}

/** The attachment strip of a message bubble: a tile per id, images as thumbnails. */
export function renderAttachments(ids) {
  const strip = h('div', { className: 'msg-attachments' });
  for (const id of ids) {
    if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) continue;
    const tile = h('button', { className: 'attachment', dataset: { id }, attrs: { type: 'button', title: 'Open attachment' } });
    tile.append(h('span', { className: 'attachment-label', text: 'Attachment' }));
    strip.append(tile);
    fillTile(tile, id);
  }
  return strip;
}

async function fillTile(tile, id) {
  try {
    const thumb = await fetchDataUrl(`${id}/thumbnail`);
    const img = h('img', { className: 'attachment-thumb', attrs: { alt: 'Image attachment', src: thumb.url } });
    replaceChildren(tile, img);
    tile.title = 'Open image';
    tile.addEventListener('click', () => openViewer(id));
  } catch {
    // No thumbnail: a file (pdf, text), or gone. Offer the download.
    replaceChildren(tile, h('span', { className: 'attachment-label', text: 'Download file' }));
    tile.classList.add('file');
    tile.title = 'Download';
    tile.addEventListener('click', () => download(id, tile));
  }
}

async function download(id, tile) {
  try {
    const res = await fetch(`${BASE}/${id}`, { headers: { Authorization: `Bearer ${getToken()}` } });
    if (!res.ok) throw new Error(res.status === 404 ? 'This attachment is no longer available.' : `Download failed (${res.status}).`);
    const name = fileName(res);
    if (tile) setText(tile.querySelector('.attachment-label') || tile, name);
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { attrs: { href: url, download: name } });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    notify(e.message);
  }
}

/** A full-size view of an image attachment, with a download button; Escape closes it. */
async function openViewer(id) {
  closeViewer();
  const img = h('img', { className: 'viewer-img', attrs: { alt: 'Image attachment' } });
  const close = h('button', { className: 'btn btn-ghost', text: 'Close', attrs: { type: 'button' } });
  const save = h('button', { className: 'btn btn-primary', text: 'Download', attrs: { type: 'button' } });
  viewer = h('div', { className: 'overlay viewer', attrs: { id: 'attachment-viewer', role: 'dialog', 'aria-modal': 'true', 'aria-label': 'Image' } },
    h('figure', { className: 'viewer-frame' }, img, h('figcaption', { className: 'viewer-actions' }, save, close)));
  close.addEventListener('click', closeViewer);
  save.addEventListener('click', () => download(id));
  viewer.addEventListener('click', (e) => { if (e.target === viewer) closeViewer(); });
  document.addEventListener('keydown', onViewerKey);
  document.body.append(viewer);
  close.focus();
  try {
    const original = await fetchDataUrl(id);
    img.src = original.url;
    img.alt = original.name;
  } catch (e) {
    notify(`The image could not be opened: ${e.message}`);
    closeViewer();
  }
}

function onViewerKey(e) {
  if (e.key === 'Escape') closeViewer();
}

function closeViewer() {
  if (!viewer) return;
  viewer.remove();
  viewer = null;
  document.removeEventListener('keydown', onViewerKey);
}
