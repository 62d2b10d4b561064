// Drives the built UI (dist/) in Chromium through every screen with the mock backend,
// including the error states, and saves a PNG of each into test-results/screens/.
// Every wait is on a condition (locator expectations), never a fixed sleep.

import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, serveDir, type Browser, type Served } from './harness';

const DIST = fileURLToPath(new URL('../dist', import.meta.url));
const SHOTS = fileURLToPath(new URL('../test-results/screens', import.meta.url));
/** How long a condition may take; the machine may be busy compiling. */
const WAIT = { timeout: 15_000 };

let served: Served | undefined;
let browser: Browser | undefined;
const pages: Page[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  served = await serveDir(DIST);
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  await served?.close();
});

async function open(scenario: string, scheme: 'light' | 'dark' = 'light'): Promise<Page> {
  const page = await browser!.context.newPage();
  pages.push(page);
  page.on('pageerror', (e) => pageErrors.push(`${scenario}: ${e.message}`));
  await page.emulateMedia({ colorScheme: scheme });
  await page.goto(`${served!.url}/?mock=${scenario}`);
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  // Finished transitions: a button fading back from busy would look disabled.
  await page.screenshot({ path: `${SHOTS}/${name}.png`, animations: 'disabled' });
}

/** Polls a condition inside the page (for state only the mock knows, e.g. the clipboard). */
async function until(page: Page, fn: string): Promise<void> {
  await page.waitForFunction(fn, undefined, WAIT);
}

const tid = (page: Page, id: string) => page.getByTestId(id);
const peer = (page: Page, name: string) => page.locator(`[data-testid="peer-row"][data-peer-name="${name}"]`);

async function text(page: Page, id: string): Promise<string> {
  await tid(page, id).first().waitFor(WAIT);
  return (await tid(page, id).first().textContent())?.trim() ?? '';
}

async function waitText(page: Page, id: string, expected: string | RegExp): Promise<void> {
  const locator = tid(page, id).first();
  await locator.waitFor(WAIT);
  await expect.poll(async () => (await locator.textContent())?.trim(), WAIT).toMatch(expected);
}

describe('helper problems', () => {
  const cases: [string, RegExp, RegExp][] = [
    ['not_installed', /not installed/, /apt install/],
    ['not_running', /not running/, /sudo systemctl start trellisd/],
    ['permission_denied', /Not allowed/, /sudo usermod -aG trellis \$USER/],
    ['version_mismatch', /another version/, /same Trellis version/],
    ['unresponsive', /does not answer/, /restart trellisd/],
    ['disconnected', /Lost the connection/, /systemctl status trellisd/],
  ];
  for (const [scenario, title, advice] of cases) {
    it(`${scenario} shows the problem screen with what to do`, async () => {
      const page = await open(scenario);
      await tid(page, 'helper-problem').waitFor(WAIT);
      expect(await tid(page, 'helper-problem').getAttribute('data-kind')).toBe(scenario);
      expect(await text(page, 'problem-title')).toMatch(title);
      expect(await tid(page, 'helper-problem').textContent()).toMatch(advice);
      expect(await text(page, 'problem-message')).not.toBe('');
      await shot(page, `problem-${scenario}`);
    });
  }

  it('the AppImage offers to install the helper, says what that does first, and connects after', async () => {
    const page = await open('not_installed_appimage');
    await tid(page, 'install-helper-card').waitFor(WAIT);
    expect(await text(page, 'install-helper-explanation')).toMatch(/administrator's password.*systemd.*group trellis/s);
    // The package advice is not shown where the app can do it itself.
    expect(await tid(page, 'helper-problem').textContent()).not.toMatch(/apt install/);
    await shot(page, 'problem-not_installed-appimage');
    await tid(page, 'install-helper').click();
    await tid(page, 'install-output').waitFor(WAIT);
    expect(await text(page, 'install-output')).toMatch(/enabled and started trellisd.service/);
    // The service is up: the app reports the helper back, and the first-run screen shows.
    await tid(page, 'first-run').waitFor(WAIT);
    expect(await tid(page, 'helper-problem').count()).toBe(0);
  });

  it('a declined administrator prompt is said, and the offer stays', async () => {
    const page = await open('not_installed_appimage');
    await tid(page, 'install-helper-card').waitFor(WAIT);
    await page.evaluate(() => {
      (window as any).__TRELLIS_MOCK__.installFailure = {
        kind: 'internal',
        message: 'The helper was not installed: the administrator prompt was declined. Nothing was changed.',
      };
    });
    await tid(page, 'install-helper').click();
    await waitText(page, 'install-error', 'The helper was not installed: the administrator prompt was declined. Nothing was changed.');
    expect(await tid(page, 'install-helper').isEnabled()).toBe(true);
    expect(await tid(page, 'install-output').count()).toBe(0);
  });

  it('Try again keeps the problem screen while the helper is away, and it recovers by itself', async () => {
    const page = await open('not_running');
    await tid(page, 'retry').click();
    await until(page, `document.querySelector('[data-testid="retry"]')?.getAttribute('aria-busy') === 'false'`);
    await tid(page, 'helper-problem').waitFor(WAIT);
    // The app reports the helper back (helper-connection connected:true): no click needed.
    await page.evaluate(() => (window as any).__TRELLIS_MOCK__.fixHelper());
    await waitText(page, 'state-label', 'Connected');
    expect(await tid(page, 'helper-problem').count()).toBe(0);
  });

  it('losing the helper while running switches to the problem screen', async () => {
    const page = await open('connected');
    await waitText(page, 'state-label', 'Connected');
    await page.evaluate(() =>
      (window as any).__TRELLIS_MOCK__.breakHelper({ kind: 'disconnected', message: 'The helper closed the connection.' }),
    );
    await tid(page, 'helper-problem').waitFor(WAIT);
    expect(await text(page, 'problem-message')).toBe('The helper closed the connection.');
  });
});

describe('first run', () => {
  it('prefills the device name and server, and creating a network leads to the main view', async () => {
    const page = await open('fresh');
    await tid(page, 'first-run').waitFor(WAIT);
    expect(await tid(page, 'device-name').inputValue()).toBe('laptop');
    await expect.poll(() => tid(page, 'server-input').inputValue(), WAIT).toBe('vpn.example.org:8443');
    await shot(page, 'first-run-create');
    await tid(page, 'create-network').click();
    await waitText(page, 'network-name-error', 'network name is empty');
    await tid(page, 'network-name').fill('home');
    await tid(page, 'create-network').click();
    await waitText(page, 'network-name-label', 'home');
    await waitText(page, 'state-label', 'Connected');
    expect(await text(page, 'my-address')).toContain('100.64.0.1');
    await tid(page, 'no-peers').waitFor(WAIT);
    await shot(page, 'main-new-network');
  });

  it('a bad device name is explained before anything is sent', async () => {
    const page = await open('fresh');
    await tid(page, 'device-name').fill('my laptop');
    await waitText(page, 'device-name-error', `device name "my laptop" contains ' '; use letters, digits and '-'`);
  });

  it('join checks the code as it is typed and shows the helper refusal exactly', async () => {
    const page = await open('fresh');
    await tid(page, 'choose-join').click();
    await tid(page, 'join-input').fill('K7QF-3M9T-WX2C-HN4U');
    await waitText(
      page,
      'join-error',
      `'U' (character 19) cannot be in an invite code; codes use digits and letters except U`,
    );
    expect(await tid(page, 'join-submit').isDisabled()).toBe(true);
    await shot(page, 'join-bad-character');

    await tid(page, 'join-input').fill('K7QF-3M9T');
    expect(await tid(page, 'join-error').count()).toBe(0); // still typing: no error yet
    await waitText(page, 'join-hint', '8 of 16 letters and digits');
    await tid(page, 'join-input').blur();
    await waitText(page, 'join-error', 'an invite code has 16 letters and digits; this one has 8');

    await tid(page, 'join-input').fill('expd 0000 0000 oooo');
    await waitText(page, 'join-hint', 'Code EXPD-0000-0000-0000');
    await tid(page, 'join-submit').click();
    await waitText(page, 'join-error', /^this invite expired at \d{4}-\d\d-\d\d \d\d:\d\d UTC; ask for a new one$/);
    // The form keeps what was typed after a refusal.
    expect(await tid(page, 'join-input').inputValue()).toBe('expd 0000 0000 oooo');
    await shot(page, 'join-expired');

    await tid(page, 'join-input').fill('trellis://join/K7QF-3M9T-WX2C-HN4R@vpn.example.org');
    await tid(page, 'join-submit').click();
    await waitText(page, 'network-name-label', 'friends');
    await waitText(page, 'state-label', 'Connected');
    await expect.poll(() => peer(page, 'alice-laptop').getAttribute('data-peer-state'), WAIT).toBe('connected');
  });

  it('a device removed by its owner sees why', async () => {
    const page = await open('removed');
    await tid(page, 'first-run').waitFor(WAIT);
    expect(await text(page, 'notice')).toBe('this device was removed from network "home" by its owner');
    await shot(page, 'first-run-removed');
  });
});

describe('main view', () => {
  it('shows state, address and each kind of peer', async () => {
    const page = await open('connected');
    await waitText(page, 'state-label', 'Connected');
    expect(await text(page, 'network-name-label')).toBe('home');
    expect(await text(page, 'my-address')).toContain('100.64.0.1');
    await expect.poll(() => page.getByTestId('peer-row').count(), WAIT).toBe(3);
    const desktop = peer(page, 'desktop');
    expect(await desktop.getByTestId('peer-path').textContent()).toBe('direct');
    expect(await desktop.getByTestId('peer-rtt').textContent()).toBe('4.2 ms');
    expect(await desktop.getByTestId('peer-fingerprint').textContent()).toBe('a41c 9e02 77bd 10f3 c5e8 2b6d 93a0 4f1e');
    expect(await peer(page, 'phone').getByTestId('peer-path').textContent()).toBe('relayed via server');
    expect(await peer(page, 'raspberry').getAttribute('data-online')).toBe('false');
    expect(await peer(page, 'raspberry').getByTestId('peer-state').textContent()).toBe('Offline');
    expect(await page.getByText("compare them with your friend's screen").count()).toBe(1);
    await shot(page, 'main-connected');
  });

  it('the same in dark mode', async () => {
    const page = await open('connected', 'dark');
    await expect.poll(() => page.getByTestId('peer-row').count(), WAIT).toBe(3);
    const bg = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    expect(bg).toBe('rgb(19, 21, 25)');
    await shot(page, 'main-connected-dark');
  });

  it('live events update a peer and its traffic', async () => {
    const page = await open('connected');
    const traffic = peer(page, 'desktop').getByTestId('peer-traffic');
    await traffic.waitFor(WAIT);
    const before = await traffic.textContent();
    // The mock ticks every 2 s like a live helper (peer_changed events).
    await expect.poll(() => traffic.textContent(), WAIT).not.toBe(before);
  });

  it('clicking my address copies it through copy_text', async () => {
    const page = await open('connected');
    await tid(page, 'my-address').click();
    await until(page, `window.__TRELLIS_MOCK__.copied.includes('100.64.0.1')`);
    await waitText(page, 'my-address', /Copied/);
  });

  it('the switch disconnects and connects', async () => {
    const page = await open('connected');
    await waitText(page, 'state-label', 'Connected');
    await tid(page, 'connect-toggle').click();
    await waitText(page, 'state-label', 'Disconnected');
    expect(await tid(page, 'connect-toggle').getAttribute('aria-checked')).toBe('false');
    await expect.poll(() => peer(page, 'desktop').getAttribute('data-peer-state'), WAIT).toBe('offline');
    await shot(page, 'main-disconnected');
    await tid(page, 'connect-toggle').click();
    await waitText(page, 'state-label', /Connecting|Connected/);
    await waitText(page, 'state-label', 'Connected');
    await expect.poll(() => peer(page, 'desktop').getAttribute('data-peer-state'), WAIT).toBe('connected');
  });

  it('connecting and needs-attention states say so', async () => {
    const connecting = await open('connecting');
    await waitText(connecting, 'state-label', 'Connecting');
    await expect.poll(() => connecting.getByTestId('peer-row').count(), WAIT).toBe(3);
    await shot(connecting, 'main-connecting');
    const attention = await open('attention');
    await waitText(attention, 'state-label', 'Needs attention');
    expect(await text(attention, 'state-reason')).toBe('the signal server is unreachable; reconnecting');
    await expect.poll(() => attention.getByTestId('peer-row').count(), WAIT).toBe(3);
    // The notice is the reason already: it is not said twice.
    expect(await attention.getByTestId('notice').count()).toBe(0);
    await shot(attention, 'main-attention');
  });

  it('the owner removes a peer after confirming', async () => {
    const page = await open('connected');
    await peer(page, 'raspberry').getByTestId('peer-remove').click();
    await tid(page, 'peer-remove-confirm').waitFor(WAIT);
    await shot(page, 'main-remove-confirm');
    await tid(page, 'peer-remove-yes').click();
    await expect.poll(() => peer(page, 'raspberry').count(), WAIT).toBe(0);
    await expect.poll(() => page.getByTestId('peer-row').count(), WAIT).toBe(2);
    await waitText(page, 'peers-count', '· 2 of 2 peers connected');
  });

  it('being removed by the owner while open returns to the first run', async () => {
    const page = await open('member');
    await waitText(page, 'network-name-label', 'friends');
    await page.evaluate(() => (window as any).__TRELLIS_MOCK__.removedByOwner());
    await waitText(page, 'notice', 'this device was removed from network "friends" by its owner');
    await tid(page, 'first-run').waitFor(WAIT);
  });

  it('the tray can switch panels (navigate event)', async () => {
    const page = await open('connected');
    await waitText(page, 'state-label', 'Connected');
    await page.evaluate(() => (window as any).__TRELLIS_MOCK__.navigate('settings'));
    await tid(page, 'settings').waitFor(WAIT);
    await page.evaluate(() => (window as any).__TRELLIS_MOCK__.navigate('invite'));
    await tid(page, 'create-invite').waitFor(WAIT);
  });
});

describe('invites', () => {
  it('creates a code with a QR, lists, copies and revokes', async () => {
    const page = await open('connected');
    await tid(page, 'nav-invite').click();
    await expect.poll(() => page.getByTestId('invite-row').count(), WAIT).toBe(2);
    await tid(page, 'invite-expiry').selectOption({ label: '1 day' });
    await tid(page, 'create-invite').click();
    await waitText(page, 'invite-code', /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}@vpn\.example\.org:8443$/);
    await until(page, `document.querySelector('[data-testid="invite-qr"] svg') !== null`);
    expect(await text(page, 'invite-meta')).toMatch(/one use, expires in 2[34] h/);
    await expect.poll(() => page.getByTestId('invite-row').count(), WAIT).toBe(3);
    await shot(page, 'invite-created');

    const ticket = await text(page, 'invite-code');
    await tid(page, 'copy-invite').click();
    await until(page, `window.__TRELLIS_MOCK__.copied.includes(${JSON.stringify(ticket)})`);

    await page.locator('[data-testid="invite-row"][data-invite-id="X2M9"]').getByTestId('invite-revoke').click();
    await expect.poll(() => page.getByTestId('invite-row').count(), WAIT).toBe(2);
    expect(await page.locator('[data-invite-id="X2M9"]').count()).toBe(0);
  });

  it('a device that is not the owner is told who can invite', async () => {
    const page = await open('member');
    await tid(page, 'nav-invite').click();
    await tid(page, 'invite-not-owner').waitFor(WAIT);
    expect(await tid(page, 'create-invite').count()).toBe(0);
    await shot(page, 'invite-not-owner');
  });
});

describe('join and settings while in a network', () => {
  it('join explains that one must leave first', async () => {
    const page = await open('connected');
    await tid(page, 'nav-join').click();
    await tid(page, 'join-in-network').waitFor(WAIT);
    expect(await tid(page, 'join-in-network').textContent()).toMatch(/already in home/);
    await shot(page, 'join-in-network');
    await tid(page, 'go-settings').click();
    await tid(page, 'settings').waitFor(WAIT);
  });

  it('settings validate, save and show the helper refusal', async () => {
    const page = await open('connected');
    await tid(page, 'nav-settings').click();
    await waitText(page, 'app-version', '0.1.0');
    expect(await text(page, 'helper-version')).toBe('0.1.0');
    await shot(page, 'settings');

    await tid(page, 'settings-server').fill('ftp://example.org');
    await waitText(page, 'settings-server-error', 'the server address "ftp://example.org" is invalid: only ws:// and wss:// are supported');

    await tid(page, 'settings-device-name').fill('Work-Laptop');
    await tid(page, 'save-device-name').click();
    await until(page, `window.__TRELLIS_MOCK__.state.status.device_name === 'work-laptop'`);

    await tid(page, 'connect-on-start').uncheck();
    await until(page, `window.__TRELLIS_MOCK__.state.settings.connectOnStart === false`);

    // An owner with peers cannot leave: the helper's sentence shows next to the button.
    await tid(page, 'leave-network').click();
    await tid(page, 'leave-yes').click();
    await waitText(page, 'leave-error', 'the owner cannot leave while others are in the network; remove them first');
    await shot(page, 'settings-leave-refused');
  });

  it('a member leaves and lands on the first run', async () => {
    const page = await open('member');
    await tid(page, 'nav-settings').click();
    await tid(page, 'leave-network').click();
    await tid(page, 'leave-yes').click();
    await tid(page, 'first-run').waitFor(WAIT);
  });
});

describe('no page errors', () => {
  it('no script error happened on any page', () => {
    expect(pageErrors).toEqual([]);
  });
});
