// Visits each page given in headless Chromium (Debian's, through playwright-core), runs the
// page's `run()` and prints {url: result} as one JSON line. Usage:
//   node cors.mjs /usr/bin/chromium URL...
import { chromium } from 'playwright-core';

const [, , executablePath, ...pages] = process.argv;
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
const results = {};
try {
  for (const url of pages) {
    const page = await browser.newPage();
    const console = [];
    page.on('console', (m) => console.push(m.text()));
    await page.goto(url);
    results[url] = { ...(await page.evaluate(() => window.run())), console };
    await page.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(results) + '\n');
