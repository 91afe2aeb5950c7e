// The fake Razorpay's Checkout: the same global, constructor, options and
// handler contract as https://checkout.razorpay.com/v1/checkout.js, for
// development and tests. `open()` shows the fake's payment page in a frame
// over the merchant's page; the page reports back by postMessage.
(() => {
  'use strict';
  const script = document.currentScript;
  const base = new URL(script.src).origin;

  function Razorpay(options) {
    if (!(this instanceof Razorpay)) return new Razorpay(options);
    if (!options || !options.key) throw new Error('Razorpay: the "key" option is required');
    this.options = options;
    this.listeners = {};
    this.frame = null;
  }

  Razorpay.prototype.on = function (event, fn) {
    (this.listeners[event] = this.listeners[event] || []).push(fn);
    return this;
  };

  Razorpay.prototype.emit = function (event, payload) {
    (this.listeners[event] || []).forEach((fn) => fn(payload));
  };

  Razorpay.prototype.close = function () {
    if (this.onMessage) window.removeEventListener('message', this.onMessage);
    if (this.frame) this.frame.remove();
    this.frame = null;
  };

  Razorpay.prototype.open = function () {
    const o = this.options;
    if (this.frame) return;
    const q = new URLSearchParams({
      key_id: o.key,
      order_id: o.order_id || '',
      amount: String(o.amount || ''),
      currency: o.currency || 'INR',
      name: o.name || '',
      description: o.description || '',
      contact: (o.prefill && o.prefill.contact) || '',
    });
    const frame = document.createElement('iframe');
    frame.src = `${base}/checkout/pay?${q}`;
    frame.title = 'Razorpay Checkout';
    frame.className = 'razorpay-checkout-frame';
    frame.setAttribute('allow', 'payment');
    frame.style.cssText =
      'position:fixed;inset:0;width:100%;height:100%;border:0;z-index:2147483647;background:rgba(0,0,0,.55)';
    this.onMessage = (ev) => {
      if (ev.source !== frame.contentWindow || ev.origin !== base) return;
      const m = ev.data || {};
      if (m.type === 'success') {
        this.close();
        if (typeof o.handler === 'function') o.handler(m.response);
      } else if (m.type === 'failed') {
        this.close();
        this.emit('payment.failed', { error: m.error });
      } else if (m.type === 'dismiss') {
        this.close();
        if (o.modal && typeof o.modal.ondismiss === 'function') o.modal.ondismiss();
      }
    };
    window.addEventListener('message', this.onMessage);
    document.body.appendChild(frame);
    this.frame = frame;
  };

  window.Razorpay = Razorpay;
})();
