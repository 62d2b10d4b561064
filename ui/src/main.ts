import { mount } from 'svelte';
import App from './App.svelte';
import './app.css';
import { pickBackend } from './lib/backend';
import { AppModel } from './lib/app.svelte';

const model = new AppModel(await pickBackend());
mount(App, { target: document.getElementById('app')!, props: { model } });
// For WebDriver tests and debugging from the console: what the window knows.
(window as unknown as { __TRELLIS_MODEL__: unknown }).__TRELLIS_MODEL__ = model;
void model.start();
