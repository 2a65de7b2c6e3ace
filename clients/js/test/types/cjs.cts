// The CommonJS entry's declarations (require condition), type-checked like fixture.ts.
import wshub = require('@wshub/client');
const hub: import('@wshub/client').Hub = wshub.connect({ url: 'ws://x', token: 't' });
hub.release();
