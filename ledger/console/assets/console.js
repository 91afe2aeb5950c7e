// The billing console's script. Pages work without it except where the
// checkout needs it: the Add Credits dialog (the amount checked as it is
// typed, a live quote, one top-up per dialog, Razorpay Checkout), the
// confirmation that follows a top-up until it is credited, and the
// signed-in link (`/console/sign-in#token=…`: the fragment never reaches a
// server or a log).
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);

  const signIn = $('sign-in');
  if (signIn && location.hash.startsWith('#token=')) {
    const token = decodeURIComponent(location.hash.slice('#token='.length));
    history.replaceState(null, '', location.pathname);
    $('token').value = token;
    signIn.submit();
  }

  // The confirmation: fetch the status section again until it is final.
  const follow = () => {
    const section = $('topup-status');
    if (!section || !section.dataset.poll) return;
    setTimeout(async () => {
      try {
        const r = await fetch(section.dataset.poll, { credentials: 'same-origin' });
        if (r.ok) section.outerHTML = await r.text();
      } catch (_) {
        // Offline for a moment: the next round tries again.
      }
      follow();
    }, 1000);
  };
  follow();

  const dialog = $('add-credits');
  if (!dialog) return;
  const account = encodeURIComponent(dialog.dataset.account);
  const csrf = dialog.dataset.csrf;
  const amount = $('amount');
  const phone = $('phone');
  const bucket = $('bucket');
  const pay = $('pay');
  const retry = $('retry');
  const status = $('pay-status');
  const amountPattern = new RegExp('^(?:' + amount.getAttribute('pattern') + ')$');
  const phonePattern = /^\+?[0-9]{8,15}$/;
  // One dialog, one key: every request it sends for its top-up carries
  // the same Idempotency-Key, so a double click makes one top-up.
  let key = null;
  let topup = null;
  let inFlight = false;
  let paid = false;
  let quoteSeq = 0;
  let quoteTimer = null;

  const say = (el, message) => {
    el.textContent = message || '';
    el.hidden = !message;
  };
  const lock = (locked) => {
    amount.disabled = locked;
    phone.disabled = locked;
    bucket.disabled = locked;
  };
  const reset = () => {
    key = crypto.randomUUID();
    topup = null;
    inFlight = false;
    paid = false;
    lock(false);
    pay.disabled = false;
    pay.hidden = false;
    retry.hidden = true;
    status.textContent = '';
  };

  const amountOk = () => {
    const v = amount.value.trim();
    if (!v) {
      say($('amount-error'), '');
      $('quote').hidden = true;
      return false;
    }
    if (!amountPattern.test(v)) {
      say($('amount-error'), `Enter an amount ${dialog.dataset.amountRule}.`);
      $('quote').hidden = true;
      return false;
    }
    say($('amount-error'), '');
    return true;
  };

  const quote = async () => {
    const seq = ++quoteSeq;
    const v = encodeURIComponent(amount.value.trim());
    try {
      const r = await fetch(`/console/accounts/${account}/quote?amount_usd=${v}`, {
        credentials: 'same-origin',
      });
      const q = await r.json();
      if (seq !== quoteSeq) return;
      if (!r.ok) {
        say($('amount-error'), (q.error && q.error.message) || 'No quote for this amount.');
        $('quote').hidden = true;
        return;
      }
      $('quote-inr').textContent = q.inr;
      $('quote-credits').textContent = q.credits;
      $('quote-rate').textContent = q.fx_rate;
      $('quote').hidden = false;
    } catch (_) {
      if (seq === quoteSeq) say($('amount-error'), 'No quote right now: the ledger did not answer.');
    }
  };

  const changed = () => {
    // A different request is a different intent: a new key, unless a
    // top-up already exists for this dialog.
    if (!topup && !inFlight) key = crypto.randomUUID();
  };
  amount.addEventListener('input', () => {
    changed();
    clearTimeout(quoteTimer);
    if (amountOk()) quoteTimer = setTimeout(quote, 150);
  });
  phone.addEventListener('input', () => {
    changed();
    if (phonePattern.test(phone.value.trim())) say($('phone-error'), '');
  });
  bucket.addEventListener('change', changed);

  $('top-up').addEventListener('click', () => {
    reset();
    dialog.showModal();
    amount.focus();
  });
  $('cancel').addEventListener('click', () => dialog.close());

  const offerRetry = (message) => {
    status.textContent = message;
    pay.hidden = true;
    retry.hidden = false;
    if (!dialog.open) dialog.showModal();
  };

  const complete = async (response) => {
    paid = true;
    status.textContent = 'Confirming the payment…';
    const url = `/console/accounts/${account}/topups/${topup.topup_id}`;
    try {
      await fetch(`${url}/checkout`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: JSON.stringify({
          razorpay_payment_id: response.razorpay_payment_id,
          razorpay_order_id: response.razorpay_order_id,
          razorpay_signature: response.razorpay_signature,
        }),
      });
    } catch (_) {
      // Razorpay's webhook or the ledger's reconciliation completes it;
      // the confirmation page follows the top-up either way.
    }
    location.assign(url);
  };

  const openCheckout = () => {
    if (typeof window.Razorpay !== 'function') {
      offerRetry('The payment window could not load. Check the connection and try again.');
      return;
    }
    const checkout = new window.Razorpay({
      key: topup.razorpay.key_id,
      order_id: topup.razorpay.order_id,
      amount: topup.amount_inr_paise,
      currency: 'INR',
      name: dialog.dataset.merchant,
      description: `${topup.credits} credits`,
      prefill: { contact: phone.value.trim() },
      notes: { topup_id: topup.topup_id },
      handler: complete,
      modal: {
        ondismiss: () => {
          if (!paid) offerRetry('The payment window was closed. Try again: the same top-up is kept.');
        },
      },
    });
    checkout.on('payment.failed', (r) => {
      const why = (r && r.error && r.error.description) || 'the payment did not go through';
      offerRetry(`Payment failed: ${why}. Try again: you will be charged once.`);
    });
    status.textContent = 'Waiting for the payment…';
    // Checkout draws over the page; a modal dialog would sit above it.
    dialog.close();
    checkout.open();
  };
  retry.addEventListener('click', openCheckout);

  $('topup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (inFlight) return;
    if (topup) {
      openCheckout();
      return;
    }
    const phoneOk = phonePattern.test(phone.value.trim());
    say($('phone-error'), phoneOk ? '' : 'Enter the phone number as 8 to 15 digits, with an optional leading +.');
    if (!amountOk() || !phoneOk) return;
    inFlight = true;
    pay.disabled = true;
    status.textContent = 'Creating the order…';
    const body = { amount_usd: amount.value.trim(), phone: phone.value.trim() };
    if (bucket.value !== 'general') body.bucket = bucket.value;
    try {
      const r = await fetch(`/console/accounts/${account}/topups`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: {
          'Content-Type': 'application/json',
          'X-CSRF-Token': csrf,
          'Idempotency-Key': key,
        },
        body: JSON.stringify(body),
      });
      const v = await r.json();
      if (!r.ok) {
        status.textContent = (v.error && v.error.message) || 'The top-up could not be created.';
        return;
      }
      topup = v;
      lock(true);
      openCheckout();
    } catch (_) {
      status.textContent = 'The ledger did not answer. Try again: the same top-up is kept.';
    } finally {
      inFlight = false;
      pay.disabled = false;
    }
  });
})();
