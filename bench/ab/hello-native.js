const { HttpServer } = require(process.argv[2]);
const s = new HttpServer({ callback: () => (req, res) => { res.setHeader('Content-Type', 'text/plain'); res.end('hello'); } }, { hostname: '127.0.0.1', port: Number(process.argv[3]), protocol: 'http' });
s.Start(() => console.log('up', process.argv[2]));
